"""The Terraform as code: formatted, linted, free of known security misconfigurations, and
the policy module's own `terraform test` suite. All offline, without provider plugins
(the AWS provider cannot be fetched here; test_plan.py plans the stacks with a local
mirror of one)."""

import json
import re
import shutil

from tests.support.infra import TERRAFORM_ROOT, run, terraform_env

MODULES = sorted(p.name for p in (TERRAFORM_ROOT / "modules").iterdir() if p.is_dir())
STACKS = ["cluster", "environment"]


def test_the_layout_is_what_the_readme_describes():
    assert MODULES == ["database", "ecr", "eks", "iam-policies", "irsa-role", "log-group", "network", "uploads"]
    for directory in [*(f"modules/{m}" for m in MODULES), *STACKS]:
        names = {p.name for p in (TERRAFORM_ROOT / directory).glob("*.tf")}
        assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names, directory


def test_formatted(terraform, tmp_path):
    result = run([terraform, "fmt", "-check", "-recursive", "-diff", "-no-color"], TERRAFORM_ROOT,
                 terraform_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_tflint_finds_nothing(tflint):
    # The bundled Terraform ruleset, preset "all" (.tflint.hcl): documented and typed
    # variables and outputs, no unused declarations, pinned versions, module structure.
    result = run([tflint, "--recursive", "--config", TERRAFORM_ROOT / ".tflint.hcl", "--format", "compact",
                  "--no-color"], TERRAFORM_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_finds_nothing_unexplained(checkov, tmp_path):
    result = run([checkov, "--directory", TERRAFORM_ROOT, "--framework", "terraform", "--output", "json",
                  "--skip-download"], TERRAFORM_ROOT, timeout=600)
    report = json.loads(result.stdout)
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in report["results"]["failed_checks"]]
    assert failed == [], "\n".join(failed)
    assert report["summary"]["passed"] > 100  # it really read the resources
    # Every suppression is inline, next to its resource, with a reason.
    skipped = report["results"]["skipped_checks"]
    inline = re.findall(r"#checkov:skip=(\w+):(.+)", "".join(
        p.read_text() for p in TERRAFORM_ROOT.rglob("*.tf")))
    assert all(len(reason.strip()) > 20 for _, reason in inline)
    # (a module's skip counts once per use of the module)
    assert {c["check_id"] for c in skipped} == {check for check, _ in inline}
    assert len(skipped) >= len(inline)


def test_policy_module_terraform_test(terraform, tmp_path):
    module = tmp_path / "iam-policies"
    shutil.copytree(TERRAFORM_ROOT / "modules" / "iam-policies", module,
                    ignore=shutil.ignore_patterns(".terraform*"))
    env = terraform_env(tmp_path)
    init = run([terraform, "init", "-input=false", "-no-color"], module, env)
    assert init.returncode == 0, init.stdout + init.stderr
    result = run([terraform, "test", "-no-color"], module, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Success! (\d+) passed, 0 failed", result.stdout)
