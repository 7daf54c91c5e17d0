"""Each tfvars file against every validation it reaches, the modules' (and theirs) included.

Their variable validations need no AWS provider (test_plan.py plans the stacks only where
a local mirror has one). So each stack is copied as a "shadow": its variables.tf, and its module
calls, each to a shadow of that module (again only variables and module calls). An
argument that comes straight from a variable, or is a literal, is passed on as written;
anything else (a resource's attribute, another module's output, a local) becomes an
unknown value, which terraform's validations let through until it is known. terraform
then plans the shadow with the tfvars file, offline, and every validation of a value the
file decides runs.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.support.infra import TERRAFORM_ROOT, given_vars, parse_hcl, run, terraform_env

TFVARS = sorted(TERRAFORM_ROOT.glob("*/environments/*.tfvars"))
_STRAIGHT = re.compile(r"\$\{(var\.[\w.]+)\}")
_META = {"source", "count", "for_each", "depends_on", "providers"}


def _expression(value) -> str:
    if isinstance(value, str):
        straight = _STRAIGHT.fullmatch(value)
        if straight:
            return straight.group(1)
    literal = json.dumps(value)
    return "local.unknown" if "${" in literal else literal


def shadow(module_dir: Path, into: Path) -> None:
    into.mkdir(parents=True)
    shutil.copy(module_dir / "variables.tf", into / "variables.tf")
    lines = ['resource "terraform_data" "unknown" {}', "",
             "locals {", "  unknown = jsondecode(terraform_data.unknown.id)", "}"]
    for path in sorted(module_dir.glob("*.tf")):
        for block in parse_hcl(path.read_text()).get("module", []):
            for name, body in block.items():
                shadow((module_dir / body["source"]).resolve(), into / "modules" / name)
                lines += ["", f'module "{name}" {{', f'  source = "./modules/{name}"']
                lines += [f"  {arg} = {_expression(value)}" for arg, value in body.items()
                          if arg not in _META and not arg.startswith("__")]
                lines.append("}")
    (into / "shadow.tf").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def planner(terraform, tmp_path_factory):
    """plan(stack, tfvars) -> CompletedProcess of `terraform plan` of the stack's shadow,
    with the -var the README gives beside the file (the cluster's administrators, whom
    production's alarms notify) unless ``given`` is False."""
    roots = {}

    def plan(stack: str, tfvars: Path, given: bool = True):
        if stack not in roots:
            work = tmp_path_factory.mktemp(f"shadow-{stack}")
            shadow(TERRAFORM_ROOT / stack, work / "root")
            env = terraform_env(work)
            init = run([terraform, "init", "-input=false", "-no-color"], work / "root", env)
            assert init.returncode == 0, init.stdout + init.stderr
            roots[stack] = (work / "root", env)
        root, env = roots[stack]
        extra = given_vars(stack, tfvars) if given else []
        return run([terraform, "plan", "-input=false", "-no-color", "-refresh=false", f"-var-file={tfvars}", *extra],
                   root, env)

    return plan


@pytest.mark.parametrize("tfvars", TFVARS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_every_tfvars_file_passes_every_validation_it_reaches(planner, tfvars):
    result = planner(tfvars.parent.parent.name, tfvars)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("change, error", [
    # the network module's own rule (the stack accepts any number of zones)
    (('availability_zones = ["eu-west-1a", "eu-west-1b"]',
      'availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c", "eu-west-1d"]'),
     "Give two or three availability zones."),
    # the stack's own: zones of another region plan, and fail at apply
    (('availability_zones = ["eu-west-1a", "eu-west-1b"]', 'availability_zones = ["eu-west-1a", "eu-central-1b"]'),
     'availability_zones are zones of the region, eu-west-1: its name and a letter, such as "eu-west-1a".'),
    (('availability_zones = ["eu-west-1a", "eu-west-1b"]', 'availability_zones = ["eu-west-1a", "eu-west-1-lax-1a"]'),
     "availability_zones are zones of the region, eu-west-1"),
    (("single_nat_gateway = true", 'single_nat_gateway = true\ninterface_endpoints = ["com.amazonaws.eu-west-1.sts"]'),
     "without the com.amazonaws.<region>. prefix"),
    (("single_nat_gateway = true", 'single_nat_gateway = true\ninterface_endpoints = ["sts", "sts"]'),
     "interface_endpoints are distinct service names"),
    # the eks module's: the controller chart's admission policies need 1.30
    (("single_nat_gateway = true", 'single_nat_gateway = true\nkubernetes_version = "1.29"'),
     "kubernetes_version is a minor version of 1.30 or later"),
    # the log-group module's, two modules down (cluster -> eks -> log-group)
    (("log_retention_days  = 14", "log_retention_days  = 10"), "retention_days must be a retention period"),
    # the eks module's, on an object the stack passes through
    (("node_count          = { min = 0, desired = 2, max = 4 }",
      "node_count          = { min = 3, desired = 2, max = 4 }"), "node_count needs 0 <= min <= desired <= max, and desired >= 1."),
    # min 0 parks the group by hand; a new group still starts with a node
    (("node_count          = { min = 0, desired = 2, max = 4 }",
      "node_count          = { min = 0, desired = 0, max = 4 }"), "node_count needs 0 <= min <= desired <= max, and desired >= 1."),
    (('control_plane_log_types = ["audit", "authenticator"]', 'control_plane_log_types = ["audit", "kubelet"]'),
     "control_plane_log_types are among api, audit"),
    (('control_plane_log_types = ["audit", "authenticator"]', 'control_plane_log_types = ["authenticator"]'),
     "control_plane_log_types keeps audit"),
])
def test_a_value_a_module_refuses_is_found(planner, tmp_path, change, error):
    text = (TERRAFORM_ROOT / "cluster/environments/nonprod.tfvars").read_text()
    old, new = change
    assert old in text
    bad = tmp_path / "bad.tfvars"
    bad.write_text(text.replace(old, new))
    result = planner("cluster", bad)
    assert result.returncode != 0
    assert error in " ".join((result.stdout + result.stderr).split()), result.stdout + result.stderr


def test_a_cluster_without_an_administrator_is_refused(planner):
    # Its creator gets no access: applied without one, nobody could reach the cluster.
    result = planner("cluster", TERRAFORM_ROOT / "cluster/environments/nonprod.tfvars", given=False)
    assert result.returncode != 0
    assert "Name at least one administrator" in " ".join((result.stdout + result.stderr).split())


def test_production_without_whom_its_alarms_notify_is_refused(planner):
    # Its alarms (a file set aside, uploads waiting, the disk filling) would tell nobody.
    result = planner("environment", TERRAFORM_ROOT / "environment/environments/prod.tfvars", given=False)
    assert result.returncode != 0
    said = " ".join((result.stdout + result.stderr).split())
    assert "prod needs alarm_actions, whom its alarms notify" in said, said
    # The cheaper environments may go without.
    for env in ("dev", "staging"):
        assert planner("environment", TERRAFORM_ROOT / f"environment/environments/{env}.tfvars",
                       given=False).returncode == 0, env


@pytest.mark.parametrize("storage, refused", [
    ("{ allocated = 20, max = 21 }", True),   # RDS wants 10 % more than allocated: 22
    ("{ allocated = 20, max = 22 }", False),
    ("{ allocated = 100, max = 100 }", True),
])
def test_a_storage_ceiling_that_rds_would_refuse_at_apply_fails_the_plan(planner, tmp_path, storage, refused):
    text = (TERRAFORM_ROOT / "environment/environments/dev.tfvars").read_text()
    old = "storage_gib           = { allocated = 20, max = 50 }"
    assert old in text
    changed = tmp_path / "changed.tfvars"
    changed.write_text(text.replace(old, f"storage_gib           = {storage}"))
    result = planner("environment", changed)
    said = " ".join((result.stdout + result.stderr).split())
    assert (result.returncode != 0) == refused, said
    assert ("max at least 10 % above allocated" in said) == refused, said


@pytest.mark.parametrize("engine, refused", [("14", True), ("17", False), (None, False)])
def test_an_environment_may_keep_the_postgresql_major_it_was_applied_at(planner, tmp_path, engine, refused):
    # A stack applied at 17 must be able to say so: the module refuses a change of major.
    text = (TERRAFORM_ROOT / "environment/environments/dev.tfvars").read_text()
    old = "storage_gib           = { allocated = 20, max = 50 }"
    assert old in text
    extra = f'\n  engine_version        = "{engine}"' if engine else ""
    changed = tmp_path / "changed.tfvars"
    changed.write_text(text.replace(old, old + extra))
    result = planner("environment", changed)
    said = " ".join((result.stdout + result.stderr).split())
    assert (result.returncode != 0) == refused, said
    assert ("engine_version is one of 15, 16, 17, 18." in said) == refused, said
