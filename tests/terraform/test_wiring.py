"""The per-environment settings, read by terraform itself, and the seams between the
Terraform stacks and the Helm charts: namespaces, ServiceAccount names, the SQS backstop
and the values the environment stack hands to the controller chart.

terraform cannot plan the stacks here (the AWS provider cannot be fetched), but it can
read a stack's variables alone: each tfvars file is applied to a copy of the stack's
variables.tf, so types, defaults and validations are terraform's own.
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.charts.test_controller_chart import CHART as CONTROLLER_CHART
from tests.charts.test_controller_chart import REQUIRED, merged_values
from tests.support.infra import TERRAFORM_ROOT, parse_hcl, run, terraform_env

ENVIRONMENTS = ["dev", "staging", "prod"]
CHARTS = TERRAFORM_ROOT.parent / "charts"
TFVARS = sorted(TERRAFORM_ROOT.glob("*/environments/*.tfvars"))


def declared_variables(stack: str) -> list[str]:
    return [name for block in parse_hcl((TERRAFORM_ROOT / stack / "variables.tf").read_text())["variable"] for name in block]


def read_tfvars(terraform: Path, stack: str, tfvars: Path, tmp_path: Path) -> tuple[dict, str]:
    """(every variable of ``stack`` as terraform sees it with this file, terraform's output)."""
    work = tmp_path / f"{stack}-{tfvars.stem}"
    work.mkdir()
    shutil.copy(TERRAFORM_ROOT / stack / "variables.tf", work)
    fields = "".join(f"    {name} = var.{name}\n" for name in declared_variables(stack))
    (work / "values.tf").write_text(f'output "values" {{\n  value = {{\n{fields}  }}\n}}\n')
    env = terraform_env(tmp_path)
    said = ""
    for args in (["init", "-input=false", "-no-color"],
                 ["apply", "-input=false", "-auto-approve", "-no-color", f"-var-file={tfvars}"]):
        result = run([terraform, *args], work, env)
        said += result.stdout + result.stderr
        assert result.returncode == 0, f"{stack} {tfvars.name}: terraform {args[0]}:\n{said}"
    out = run([terraform, "output", "-json", "values"], work, env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), said


@pytest.fixture(scope="module")
def settings(terraform, tmp_path_factory) -> dict[str, dict]:
    """{"cluster/prod": {...}, "environment/dev": {...}, ...}: every tfvars file, read by terraform."""
    tmp_path = tmp_path_factory.mktemp("tfvars")
    read = {}
    for tfvars in TFVARS:
        values, said = read_tfvars(terraform, tfvars.parent.parent.name, tfvars, tmp_path)
        # terraform only warns about a setting that no variable declares; here it is an error.
        assert "undeclared variable" not in said, f"{tfvars}:\n{said}"
        read[f"{tfvars.parent.parent.name}/{tfvars.stem}"] = values
    return read


def test_every_tfvars_file_passes_its_stack_s_types_and_validations(settings):
    assert sorted(settings) == ["cluster/nonprod", "cluster/prod", "environment/dev", "environment/prod",
                                "environment/staging"]


def test_a_tfvars_file_with_a_wrong_value_is_refused(terraform, tmp_path):
    dev = (TERRAFORM_ROOT / "environment/environments/dev.tfvars").read_text()
    bad = tmp_path / "qa.tfvars"
    bad.write_text(dev.replace('environment  = "dev"', 'environment  = "qa"'))
    assert bad.read_text() != dev
    with pytest.raises(AssertionError, match="environment is one of dev, staging, prod"):
        read_tfvars(terraform, "environment", bad, tmp_path)


def test_the_environments_are_the_charts_namespaces(settings):
    environments = {name.split("/")[1]: values for name, values in settings.items()
                    if name.startswith("environment/")}
    assert sorted(environments) == sorted(ENVIRONMENTS)
    for name, values in environments.items():
        assert values["environment"] == name  # the file is the namespace it deploys
    for chart in ("rates-api", "rates-controller"):
        assert sorted(p.stem.removeprefix("values-") for p in (CHARTS / chart).glob("values-*.yaml")) \
            == sorted(ENVIRONMENTS)


def test_each_environment_lives_in_a_cluster_the_cluster_stack_defines(settings):
    clusters = {values["name"]: values for name, values in settings.items() if name.startswith("cluster/")}
    for env in ENVIRONMENTS:
        values = settings[f"environment/{env}"]
        assert values["cluster_name"] in clusters, env
        assert values["region"] == clusters[values["cluster_name"]]["region"], env
    # Production shares nothing with the cheaper environments.
    assert settings["environment/prod"]["cluster_name"] not in {
        settings[f"environment/{env}"]["cluster_name"] for env in ("dev", "staging")}


def test_only_dev_is_disposable_and_only_prod_has_a_standby(settings):
    assert {env: settings[f"environment/{env}"]["throwaway"] for env in ENVIRONMENTS} == \
        {"dev": True, "staging": False, "prod": False}
    assert {env: settings[f"environment/{env}"]["database"]["multi_az"] for env in ENVIRONMENTS} == \
        {"dev": False, "staging": False, "prod": True}


def test_sqs_dead_letters_a_message_only_after_the_controller_gave_up_on_it(settings):
    for env in ENVIRONMENTS:
        assert settings[f"environment/{env}"]["max_receive_count"] > merged_values(env)["controller"]["maxReceives"]


@pytest.mark.kube  # helm
def test_the_roles_trust_the_service_accounts_the_controller_chart_creates(settings, helm):
    for env in ENVIRONMENTS:
        sets = [arg for key, value in REQUIRED.items() for arg in ("--set-string", f"{key}={value}")]
        out = helm("template", "rates-controller", str(CONTROLLER_CHART), "--namespace", env,
                   "-f", str(CONTROLLER_CHART / f"values-{env}.yaml"), *sets).stdout
        docs = [d for d in yaml.safe_load_all(out) if d]
        accounts = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
        trusted = settings[f"environment/{env}"]["service_accounts"]
        assert accounts == sorted([trusted["controller"], trusted["ingest_job"]]), env
        [deployment] = [d for d in docs if d["kind"] == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == trusted["controller"]
        env_vars = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env_vars["JOB_SERVICE_ACCOUNT"] == trusted["ingest_job"]


def test_the_environment_stack_hands_the_controller_chart_values_it_has(helm):
    [outputs] = [block["controller_values"] for block in parse_hcl((TERRAFORM_ROOT / "environment/outputs.tf").read_text())["output"]
                 if "controller_values" in block]
    keys = list(outputs["value"])
    assert {"queue.url", "queue.deadLetterUrl", "aws.region", "serviceAccount.roleArn",
            "jobs.serviceAccount.roleArn"} <= set(keys)
    defaults = yaml.safe_load((CONTROLLER_CHART / "values.yaml").read_text())
    for key in keys:
        node = defaults
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"{key} is not a value of the controller chart"
            node = node[part]
