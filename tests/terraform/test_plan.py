"""Both stacks planned by terraform with a real AWS provider, once per tfvars file: the
provider's own checks of every value (enums, formats, ranges, arguments that conflict),
which the schema test (test_provider_schema.py) cannot make.

No provider can be fetched here, but a filesystem mirror of one may be on the machine
(`RATES_TF_PROVIDER_MIRROR`, default /opt/tf-plugins). Where it is older than the
stacks need, a copy of them is planned with the least change that version takes, each
checked to apply: the version constraint, the region's attribute name before 6.0, and the
dead-letter queue's message size before 6.8 (SQS's 1 MiB limit came then). Everything else
is the code as it ships, the stacks' provider blocks included (their region and default
tags), with credentials that are never checked added. `terraform test` plans offline: the
data sources that would ask AWS are given values (`override_data`); nothing is applied.
"""

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.support.infra import TERRAFORM_ROOT, given_vars, hcl_resource, parse_hcl, run, terraform_env

MIRROR = Path(os.environ.get("RATES_TF_PROVIDER_MIRROR", "/opt/tf-plugins"))
ACCOUNT = "123456789012"

# Added to the stack's own provider block (its region and default tags are planned too):
# credentials that are never checked, and no call to AWS to learn the account.
_OFFLINE = """
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
"""

_ACCOUNT = f'{{ account_id = "{ACCOUNT}" }}'
# What each stack asks AWS while planning, with an answer of the right shape.
_OVERRIDES = {
    "cluster": {
        "module.network.data.aws_caller_identity.current": _ACCOUNT,
        "module.network.module.flow_logs.data.aws_caller_identity.current": _ACCOUNT,
        "module.eks.module.logs.data.aws_caller_identity.current": _ACCOUNT,
        "module.eks.data.aws_eks_addon_version.this": '{ version = "v1.19.0-eksbuild.1" }',
    },
    "environment": {
        "data.aws_eks_cluster.this": """{
    identity   = [{ oidc = [{ issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF" }] }]
    vpc_config = [{ vpc_id = "vpc-0123456789abcdef0", subnet_ids = ["subnet-0a", "subnet-0b", "subnet-0c"],
                    cluster_security_group_id = "sg-0123456789abcdef0", security_group_ids = [],
                    endpoint_private_access = true, endpoint_public_access = false, public_access_cidrs = [] }]
  }""",
        "data.aws_iam_openid_connect_provider.this":
            f'{{ arn = "arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF" }}',
        "data.aws_vpc.this": '{ id = "vpc-0123456789abcdef0", cidr_block = "10.40.0.0/16" }',
        "data.aws_subnet.cluster": '{ cidr_block = "10.40.0.0/18" }',
        "data.aws_vpc_endpoint.sts": '{ id = "vpce-0123456789abcdef0" }',
        "module.uploads.data.aws_caller_identity.current": _ACCOUNT,
        "module.database.data.aws_caller_identity.current": _ACCOUNT,
        'module.database.module.logs["postgresql"].data.aws_caller_identity.current': _ACCOUNT,
        'module.database.module.logs["upgrade"].data.aws_caller_identity.current': _ACCOUNT,
    },
}


def _mirrored_version() -> tuple[int, ...] | None:
    versions = [tuple(int(p) for p in d.name.split("."))
                for d in (MIRROR / "registry.terraform.io/hashicorp/aws").glob("*.*.*")
                if re.fullmatch(r"\d+\.\d+\.\d+", d.name)]
    return max(versions, default=None)


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{path}: {old!r} is gone; update this test's adaptation to the older provider"
    path.write_text(text.replace(old, new))


def _adapt(tree: Path, version: tuple[int, ...]) -> None:
    """The stacks' copy, changed only where the mirrored provider would refuse them."""
    pinned = ".".join(map(str, version))
    for versions_tf in tree.rglob("versions.tf"):
        if "hashicorp/aws" in versions_tf.read_text():
            _replace(versions_tf, 'version = ">= 6.8, < 7.0"', f'version = "{pinned}"')
    if version < (6, 0):
        for tf in tree.rglob("*.tf"):
            if "data.aws_region.current.region" in tf.read_text():
                _replace(tf, "data.aws_region.current.region", "data.aws_region.current.name")
    if version < (6, 8):
        _replace(tree / "modules/uploads/queues.tf", "max_message_size          = 1048576",
                 "max_message_size          = 262144")
    for stack in _OVERRIDES:
        _replace(tree / stack / "providers.tf", 'provider "aws" {\n', 'provider "aws" {\n' + _OFFLINE)


def _test_file(stack: str) -> str:
    overrides = "".join(f"\noverride_data {{\n  target = {target}\n  values = {values}\n}}\n"
                        for target, values in _OVERRIDES[stack].items())
    return overrides + '\nrun "plan" {\n  command = plan\n}\n'


@pytest.fixture(scope="module")
def planned_copy(terraform, tmp_path_factory):
    version = _mirrored_version()
    if version is None:
        pytest.skip(f"no AWS provider mirrored at {MIRROR} (RATES_TF_PROVIDER_MIRROR)")
    work = tmp_path_factory.mktemp("plan")
    tree = work / "terraform-eks"
    shutil.copytree(TERRAFORM_ROOT, tree, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    _adapt(tree, version)
    config = work / "terraformrc"
    config.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{MIRROR}"\n  }}\n}}\n')
    env = terraform_env(work) | {"TF_CLI_CONFIG_FILE": str(config)}
    envs = {stack: env | {"TF_DATA_DIR": str(work / f".terraform-{stack}")} for stack in _OVERRIDES}
    for stack in _OVERRIDES:
        (tree / stack / "tests").mkdir()
        (tree / stack / "tests" / "plan.tftest.hcl").write_text(_test_file(stack))
        init = run([terraform, "init", "-input=false", "-no-color", "-backend=false"], tree / stack, envs[stack])
        assert init.returncode == 0, init.stdout + init.stderr
    return tree, envs, terraform


@pytest.mark.parametrize("tfvars", sorted(TERRAFORM_ROOT.glob("*/environments/*.tfvars")),
                         ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_the_provider_accepts_every_resource_of_every_environment(planned_copy, tfvars):
    tree, envs, terraform = planned_copy
    stack = tfvars.parent.parent.name
    result = run([terraform, "test", "-no-color", f"-var-file={tfvars}", *given_vars(stack, tfvars)],
                 tree / stack, envs[stack], timeout=600)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "1 passed, 0 failed" in said, said
    assert "Warning" not in said, said


# The eks module planned alone, as the root (a test's assertions reach the root module's
# resources only): which version each add-on is planned at.
_ADDONS_TEST = """
# Read at apply only (it waits for the cluster): an add-on left unpinned has no version
# in this plan, so the test below reads how the code takes it.
override_data {
  target = data.aws_eks_addon_version.this
  values = { version = "v9.9.9-eksbuild.1" }
}

override_data {
  target = module.logs.data.aws_caller_identity.current
  values = %(account)s
}

variables {
  name                 = "rates-test"
  subnet_ids           = ["subnet-0a", "subnet-0b"]
  admin_principal_arns = ["arn:aws:iam::%(account_id)s:role/platform-admins"]
}

run "pinned_version" {
  command = plan

  variables {
    addon_versions = { coredns = "v1.11.4-eksbuild.2", "vpc-cni" = "v1.19.2-eksbuild.1" }
  }

  assert {
    condition     = aws_eks_addon.workload["coredns"].addon_version == "v1.11.4-eksbuild.2" && aws_eks_addon.node["vpc-cni"].addon_version == "v1.19.2-eksbuild.1"
    error_message = "A version in addon_versions is the add-on's."
  }
}

run "unknown_addon_refused" {
  command = plan

  variables {
    addon_versions = { "aws-ebs-csi-driver" = "v1.0.0-eksbuild.1" }
  }

  expect_failures = [var.addon_versions]
}
"""


def test_the_add_ons_take_the_newest_build_unless_pinned(planned_copy):
    # EKS's default build (most_recent = false) is usually older than the newest, which
    # clusters applied before this pin run: it would have downgraded their add-ons.
    [reads] = [block["aws_eks_addon_version"]["this"] for block in parse_hcl(
        (TERRAFORM_ROOT / "modules/eks/main.tf").read_text())["data"] if "aws_eks_addon_version" in block]
    assert reads["most_recent"] is True
    assert reads["kubernetes_version"] == "${aws_eks_cluster.this.version}"
    for addons in ("node", "workload"):
        assert hcl_resource("modules/eks/main.tf", "aws_eks_addon", addons)["addon_version"] == \
            "${lookup(var.addon_versions, each.key, data.aws_eks_addon_version.this[each.key].version)}"
    calls = [body["eks"] for body in parse_hcl((TERRAFORM_ROOT / "cluster/main.tf").read_text())["module"] if "eks" in body]
    assert [call["addon_versions"] for call in calls] == ["${var.addon_versions}"]

    said = _test_module(planned_copy, "eks", _ADDONS_TEST)
    assert "2 passed, 0 failed" in said, said


# Each module test's provider: the region the tests' zones and ARNs are in, offline.
_PROVIDER = """
provider "aws" {
  region = "eu-west-1"
%(offline)s}
"""


def _test_module(planned_copy, name: str, test: str) -> str:
    """`terraform test` of the (adapted) module ``name`` as the root, with ``test``: its output."""
    tree, envs, terraform = planned_copy
    module = tree / "modules" / name
    (module / "tests").mkdir()
    (module / "tests" / "plan.tftest.hcl").write_text((_PROVIDER + test) % {
        "offline": _OFFLINE, "account": _ACCOUNT, "account_id": ACCOUNT})
    env = envs["cluster"] | {"TF_DATA_DIR": str(tree.parent / f".terraform-module-{name}")}
    init = run([terraform, "init", "-input=false", "-no-color", "-backend=false"], module, env)
    assert init.returncode == 0, init.stdout + init.stderr
    result = run([terraform, "test", "-no-color"], module, env, timeout=600)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    return said


_ZONES_TEST = """
override_data {
  target = data.aws_caller_identity.current
  values = %(account)s
}

override_data {
  target = module.flow_logs.data.aws_caller_identity.current
  values = %(account)s
}

variables {
  name = "rates-test"
}

run "the_regions_zones" {
  command = plan

  variables {
    availability_zones = ["eu-west-1a", "eu-west-1b"]
  }
}

run "another_regions_zones" {
  command = plan

  variables {
    availability_zones = ["eu-west-1a", "us-east-1b"]
  }

  expect_failures = [aws_vpc.this]
}
"""


def test_the_network_refuses_zones_of_another_region_than_the_provider_s(planned_copy):
    # The cluster stack's own validation compares them with its region variable; the
    # module with the region its resources are really made in.
    said = _test_module(planned_copy, "network", _ZONES_TEST)
    assert "2 passed, 0 failed" in said, said
