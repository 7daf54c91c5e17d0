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

from tests.charts.test_controller_chart import CHART as CONTROLLER_CHART
from tests.charts.test_controller_chart import merged_values, render, values_args
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
        docs = render(helm, *values_args(env), namespace=env)
        accounts = sorted(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
        trusted = settings[f"environment/{env}"]["service_accounts"]
        assert accounts == sorted([trusted["controller"], trusted["ingest_job"]]), env
        [deployment] = [d for d in docs if d["kind"] == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == trusted["controller"]
        env_vars = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env_vars["JOB_SERVICE_ACCOUNT"] == trusted["ingest_job"]


# What each value the environment stack hands a chart must come from, and a value of the
# kind it will have, to render the chart with.
HANDED = {
    "rates-controller": {
        "queue.url": ("module.uploads.queue_url",
                      "https://sqs.eu-west-1.amazonaws.com/123456789012/example-rates-dev-prices-uploads"),
        "queue.deadLetterUrl": ("module.uploads.dead_letter_queue_url",
                                "https://sqs.eu-west-1.amazonaws.com/123456789012/example-rates-dev-prices-dead-letter"),
        "aws.region": ("var.region", "eu-west-1"),
        "serviceAccount.roleArn": ("module.controller_role.arn", "arn:aws:iam::123456789012:role/rates-dev-controller"),
        "jobs.serviceAccount.name": ("var.service_accounts.ingest_job", "rates-ingest"),
        "jobs.serviceAccount.roleArn": ("module.ingest_job_role.arn",
                                        "arn:aws:iam::123456789012:role/rates-dev-ingest-job"),
        "networkPolicy.database.cidrs": ("local.database_cidrs", ["10.41.0.0/18", "10.41.64.0/18"]),
    },
    "rates-api": {
        "config.forwardedAllowIps": ("data.aws_vpc.this.cidr_block", "10.41.0.0/16"),
        "networkPolicy.database.cidrs": ("local.database_cidrs", ["10.41.0.0/18", "10.41.64.0/18"]),
    },
}
OUTPUTS = {"rates-controller": "controller_values", "rates-api": "api_values"}


def _leaves(tree: dict, prefix: str = "") -> dict:
    found = {}
    for key, value in tree.items():
        if key.startswith("__"):
            continue
        path = f"{prefix}{key}"
        found.update(_leaves(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return found


def _nest(leaves: dict) -> dict:
    tree: dict = {}
    for path, value in leaves.items():
        *parents, last = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return tree


@pytest.mark.kube  # helm
@pytest.mark.parametrize("chart", sorted(HANDED))
def test_the_environment_stack_hands_each_chart_values_it_takes(chart, helm, tmp_path):
    outputs = {name: block[name] for block in parse_hcl((TERRAFORM_ROOT / "environment/outputs.tf").read_text())["output"]
               for name in block}
    handed = _leaves(outputs[OUTPUTS[chart]]["value"])
    assert handed == {path: f"${{{source}}}" for path, (source, _) in HANDED[chart].items()}

    # The chart takes them: its strict schema accepts values of that kind at those paths.
    values = tmp_path / "from-terraform.json"
    values.write_text(json.dumps(_nest({path: sample for path, (_, sample) in HANDED[chart].items()})))
    # (for the controller chart they are also all the values it requires)
    rendered = helm("template", chart, str(CHARTS / chart), "--namespace", "dev",
                    "-f", str(CHARTS / chart / "values-dev.yaml"), "-f", str(values)).stdout
    assert "10.41.64.0/18" in rendered


def _cpu(quantity) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _vcpus(instance_type: str) -> int:
    """vCPUs of an EC2 type by its size name: large 2, xlarge 4, Nxlarge 4N."""
    size = instance_type.split(".")[1]
    if size == "large":
        return 2
    multiple = size.removesuffix("xlarge")
    return 4 * (int(multiple) if multiple else 1)


def _cpu_at_full_scale(env: str) -> float:
    """CPU requested by one environment at its peak: the API at its most replicas plus a
    rollout's surge, the controller, and every ingest Job it may run at once."""
    api, controller = merged_values(env, CHARTS / "rates-api"), merged_values(env, CONTROLLER_CHART)
    pods = api["autoscaling"]["maxReplicas"] if api["autoscaling"]["enabled"] else api["replicaCount"]
    surge = str(api["rollingUpdate"]["maxSurge"])
    pods += -(-pods * int(surge[:-1]) // 100) if surge.endswith("%") else int(surge)
    return (pods * _cpu(api["resources"]["requests"]["cpu"])
            + _cpu(controller["resources"]["requests"]["cpu"])
            + controller["controller"]["maxActiveJobs"] * _cpu(controller["jobs"]["resources"]["requests"]["cpu"]))


def test_each_cluster_can_hold_its_environments_at_full_scale(settings):
    for name, cluster in settings.items():
        if not name.startswith("cluster/"):
            continue
        envs = [env for env in ENVIRONMENTS if settings[f"environment/{env}"]["cluster_name"] == cluster["name"]]
        assert envs, name
        # Allocatable: what EKS leaves of a node after the kubelet's reservation and the
        # per-node DaemonSets (aws-node, kube-proxy), about 0.3 vCPU; then a tenth off for
        # pods that do not pack perfectly.
        node = min(_vcpus(t) for t in cluster["node_instance_types"]) - 0.3
        capacity = cluster["node_count"]["max"] * node * 0.9
        needed = sum(_cpu_at_full_scale(env) for env in envs)
        assert needed <= capacity, f"{name}: {envs} need {needed:.1f} vCPU at full scale, nodes give {capacity:.1f}"
