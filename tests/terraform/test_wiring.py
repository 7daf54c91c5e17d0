"""The per-environment settings, read by terraform itself, and the seams between the
Terraform stacks and the Helm charts: namespaces, ServiceAccount names, the SQS backstop,
the values the environment stack hands to both charts, and the database users (the URLs
the pods log in with, the rds-db:connect grants of their roles and the users the schema
migration makes).

Without the AWS provider (test_plan.py needs a local mirror of it), terraform can still
read a stack's variables alone: each tfvars file is applied to a copy of the stack's
variables.tf, so types, defaults and validations are terraform's own.
"""

import json
import re
import shutil
from pathlib import Path

import psycopg2.extensions
import pytest
import yaml

from rates_api.settings import Settings as ApiSettings
from rates_controller.events import UploadedObject
from rates_controller.jobs import manifest as job_manifest
from rates_controller.settings import Settings as ControllerSettings
from rates_core import rds_auth
from rates_ingest.settings import Settings as IngestSettings
from tests.charts.test_controller_chart import CHART as CONTROLLER_CHART
from tests.charts.test_controller_chart import container_env, merged_values, render, values_args
from ratesctl import localdb
from tests.support.db import autocommit, create_database, migrated_on_rds, table_privileges
from tests.support.infra import TERRAFORM_ROOT, apply_module, given_vars, hcl_resource, parse_hcl, run, terraform_env

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
                 ["apply", "-input=false", "-auto-approve", "-no-color", f"-var-file={tfvars}", *given_vars(stack, tfvars)]):
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


def test_the_cheap_environments_stay_as_cheap_as_terraform_eks_readme_says(settings):
    # Each of these is tens of dollars a month (a cost review: Spot alone is ~$89), and a
    # change of one passed every other test. The README's table is the reference.
    nonprod, prod = settings["cluster/nonprod"], settings["cluster/prod"]
    assert (nonprod["single_nat_gateway"], nonprod["node_capacity_type"], nonprod["interface_endpoints"]) == (
        True, "SPOT", [])
    assert (prod["single_nat_gateway"], prod["node_capacity_type"], prod["interface_endpoints"]) == (
        False, "ON_DEMAND", ["sts"])
    databases = {env: settings[f"environment/{env}"]["database"] for env in ENVIRONMENTS}
    assert {env: (db["instance_class"], db["multi_az"], db["performance_insights"]) for env, db in databases.items()} == {
        "dev": ("db.t4g.micro", False, False), "staging": ("db.t4g.medium", False, True),
        "prod": ("db.r7g.large", True, True)}


def test_an_environment_pins_sts_to_the_vpc_only_in_a_cluster_with_an_sts_endpoint(settings):
    clusters = {values["name"]: values for name, values in settings.items() if name.startswith("cluster/")}
    expects = {env: settings[f"environment/{env}"]["sts_endpoint_in_vpc"] for env in ENVIRONMENTS}
    for env, expected in expects.items():
        cluster = clusters[settings[f"environment/{env}"]["cluster_name"]]
        # Expected without the endpoint, the plan fails (a data source finds none); made but
        # not expected, the API's HTTPS stays open to any address.
        assert expected == ("sts" in cluster["interface_endpoints"]), env
    assert expects == {"dev": False, "staging": False, "prod": True}  # the cheap cluster goes without


def test_sqs_dead_letters_a_message_only_after_the_controller_gave_up_on_it(settings):
    for env in ENVIRONMENTS:
        assert settings[f"environment/{env}"]["max_receive_count"] > merged_values(env)["controller"]["maxReceives"]


def _uploads_resource(kind: str, name: str) -> dict:
    return hcl_resource("modules/uploads/queues.tf", kind, name)


def test_the_queue_hears_of_uploads_under_the_prices_prefix_only_and_gives_up_as_configured():
    """Static, as no plan runs here: the notification's prefix is the one the Jobs' role
    may read (any other upload would make a Job that fails with 403), and SQS's own
    backstop uses the configured count that the test above compares with the chart's."""
    [queue] = _uploads_resource("aws_s3_bucket_notification", "prices")["queue"]
    assert queue["filter_prefix"] == '${var.prices_prefix == "" ? null : var.prices_prefix}'
    assert queue["events"] == ["s3:ObjectCreated:*"]
    uploads = _uploads_resource("aws_sqs_queue", "uploads")
    # An expired message is dropped without reaching the dead-letter queue: keep the longest.
    assert uploads["message_retention_seconds"] == "${14 * 86400}"
    redrive = uploads["redrive_policy"]
    assert re.search(r"\bmaxReceiveCount = var\.max_receive_count\b", redrive), redrive
    policies = (TERRAFORM_ROOT / "modules/iam-policies/main.tf").read_text()
    assert 'Resource = "${var.bucket_arn}/${var.prices_prefix}*"' in policies


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


# What each value the environment stack hands a chart must come from (a reference, or
# the expression as written), and a value of the kind it will have, to render the chart with.
DATABASE_URLS = {
    chart: "postgresql://${module.policies.database_users.%s}@${module.database.address}:${module.database.port}"
           "/${module.database.database_name}?sslmode=require" % user
    for chart, user in (("rates-api", "api"), ("rates-controller", "ingest_job"))
}
SAMPLE_DATABASE_ADDRESS = "rates-dev.c1a2b3c4d5e6.eu-west-1.rds.amazonaws.com"
HANDED = {
    "rates-controller": {
        # the environment the values are for: the chart refuses them in another namespace
        # (_render_handed gives the environment it renders for)
        "terraformEnvironment": ("var.environment", "dev"),
        "queue.url": ("module.uploads.queue_url",
                      "https://sqs.eu-west-1.amazonaws.com/123456789012/example-rates-dev-prices-uploads"),
        "queue.deadLetterUrl": ("module.uploads.dead_letter_queue_url",
                                "https://sqs.eu-west-1.amazonaws.com/123456789012/example-rates-dev-prices-dead-letter"),
        # the bucket whose events the controller takes, and the prefix its notification and
        # the Jobs' role cover: any other is a poison message
        "queue.bucket": ("module.uploads.bucket_name", "example-rates-dev-prices"),
        "queue.prefix": ("var.prices_prefix", "prices/"),
        "aws.region": ("var.region", "eu-west-1"),
        "serviceAccount.name": ("var.service_accounts.controller", "rates-controller"),
        "serviceAccount.roleArn": ("module.controller_role.arn", "arn:aws:iam::123456789012:role/rates-dev-controller"),
        "jobs.serviceAccount.name": ("var.service_accounts.ingest_job", "rates-ingest"),
        "jobs.serviceAccount.roleArn": ("module.ingest_job_role.arn",
                                        "arn:aws:iam::123456789012:role/rates-dev-ingest-job"),
        "networkPolicy.database.cidrs": ("local.database_cidrs", ["10.41.0.0/18", "10.41.64.0/18"]),
        "database.url": (DATABASE_URLS["rates-controller"],
                         f"postgresql://rates_ingest@{SAMPLE_DATABASE_ADDRESS}:5432/rates?sslmode=require"),
        "database.iamAuth": (True, True),
    },
    "rates-api": {
        "terraformEnvironment": ("var.environment", "dev"),
        "config.forwardedAllowIps": ("data.aws_vpc.this.cidr_block", "10.41.0.0/16"),
        "networkPolicy.database.cidrs": ("local.database_cidrs", ["10.41.0.0/18", "10.41.64.0/18"]),
        "networkPolicy.sts.cidrs": ("local.sts_cidrs", ["10.41.0.0/16"]),
        "serviceAccount.name": ("var.service_accounts.api", "rates-api"),
        "serviceAccount.iamRoleArn": ("module.api_role.arn", "arn:aws:iam::123456789012:role/rates-dev-api"),
        "aws.region": ("var.region", "eu-west-1"),
        "database.url": (DATABASE_URLS["rates-api"],
                         f"postgresql://rates_api@{SAMPLE_DATABASE_ADDRESS}:5432/rates?sslmode=require"),
        "database.iamAuth": (True, True),
    },
}
OUTPUTS = {"rates-controller": "controller_values", "rates-api": "api_values"}
# The role whose credentials sign the tokens for each chart's URL: the API's pods', and the
# ingest Jobs' (the controller only hands its URL on to them).
LOGIN_ROLES = {"rates-api": "api_role", "rates-controller": "ingest_job_role"}


def _as_written(source):
    """A source as python-hcl2 reads it: a bare reference is interpolated, the rest as is."""
    return source if not isinstance(source, str) or "${" in source else f"${{{source}}}"


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
    handed = _handed(chart)
    assert handed == {path: _as_written(source) for path, (source, _) in HANDED[chart].items()}

    # The chart takes them: its strict schema accepts values of that kind at those paths.
    # (for the controller chart they are also all the values it requires)
    rendered = _render_handed(helm, chart, "dev", tmp_path)
    assert "10.41.64.0/18" in yaml.safe_dump_all(rendered)


def _handed(chart: str) -> dict:
    """{path: expression as written} of the values file the environment stack outputs for ``chart``."""
    outputs = {name: block[name] for block in parse_hcl((TERRAFORM_ROOT / "environment/outputs.tf").read_text())["output"]
               for name in block}
    return _leaves(outputs[OUTPUTS[chart]]["value"])


def _handed_values(chart: str, env: str, tmp_path: Path) -> Path:
    """A values file of the samples of what Terraform hands ``chart`` for ``env``."""
    values = tmp_path / f"{chart}-{env}-from-terraform.json"
    samples = {path: sample for path, (_, sample) in HANDED[chart].items()} | {"terraformEnvironment": env}
    values.write_text(json.dumps(_nest(samples)))
    return values


def _render_handed(helm, chart: str, env: str, tmp_path: Path) -> list[dict]:
    """``chart`` as the release of its own name in ``env``'s namespace, with the values
    file and the samples of what Terraform hands it."""
    out = helm("template", chart, str(CHARTS / chart), "--namespace", env,
               "-f", str(CHARTS / chart / f"values-{env}.yaml"), "-f", str(_handed_values(chart, env, tmp_path))).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.kube  # helm
@pytest.mark.parametrize("chart", sorted(HANDED))
def test_one_environment_s_handed_values_are_refused_in_another_s_namespace(chart, helm, tmp_path):
    """staging's role ARNs in namespace dev: the roles trust staging's ServiceAccounts only,
    so the pods could not assume them (and the API's install would wait out --wait)."""
    handed = str(_handed_values(chart, "staging", tmp_path))
    for values_file in ("values-staging.yaml", "values-dev.yaml"):
        result = helm("template", chart, str(CHARTS / chart), "--namespace", "dev",
                      "-f", str(CHARTS / chart / values_file), "-f", handed, check=False)
        assert result.returncode != 0, values_file
        assert ('terraformEnvironment is "staging" (these values are Terraform\'s outputs for staging) but the '
                'release is in namespace "dev"') in result.stderr, result.stderr
    # In its own namespace the same values render.
    helm("template", chart, str(CHARTS / chart), "--namespace", "staging",
         "-f", str(CHARTS / chart / "values-staging.yaml"), "-f", handed)


# --- the database logins ------------------------------------------------------------------

# What the environment stack's module calls get from resources and data sources, which
# cannot be read here: values of the kind they will have.
SAMPLE_POLICY_INPUTS = {
    "oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC123",
    "oidc_issuer": "oidc.eks.eu-west-1.amazonaws.com/id/ABC123",
    "bucket_arn": "arn:aws:s3:::example-rates-dev-prices",
    "bucket_kms_key_arn": "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555",
    "queue_arn": "arn:aws:sqs:eu-west-1:123456789012:example-rates-dev-prices-uploads",
    "dead_letter_queue_arn": "arn:aws:sqs:eu-west-1:123456789012:example-rates-dev-prices-dead-letter",
    "database_arn": "arn:aws:rds:eu-west-1:123456789012:db:rates-dev",
    "database_resource_id": "db-ABCDEFGHIJKLMNOPQRSTUVWXY0",
}
_VARIABLE = re.compile(r"\$\{var\.([\w.]+)\}")
_REFERENCE = re.compile(r"\$\{([^}]+)\}")


def _module_calls(stack: str) -> dict:
    return {name: body for block in parse_hcl((TERRAFORM_ROOT / stack / "main.tf").read_text()).get("module", [])
            for name, body in block.items()}


def _database_instance() -> dict:
    return hcl_resource("modules/database/main.tf", "aws_db_instance", "this")


@pytest.fixture(scope="module")
def policies(terraform, settings, tmp_path_factory) -> dict[str, dict]:
    """{env: the iam-policies module's outputs}, applied with the arguments the environment
    stack passes it: each variable's value from the env's tfvars (and defaults), literals
    as written, and a sample for what comes from a resource."""
    applied = {}
    for env in ENVIRONMENTS:
        variables = {}
        for arg, value in _module_calls("environment")["policies"].items():
            if arg == "source" or arg.startswith("__"):
                continue
            straight = _VARIABLE.fullmatch(value) if isinstance(value, str) else None
            if straight:
                node = settings[f"environment/{env}"]
                for part in straight.group(1).split("."):
                    node = node[part]
                variables[arg] = node
            elif "${" not in json.dumps(value):
                variables[arg] = value
            else:
                assert arg in SAMPLE_POLICY_INPUTS, f"give {arg} (= {value}) a sample value"
                variables[arg] = SAMPLE_POLICY_INPUTS[arg]
        applied[env] = apply_module(terraform, TERRAFORM_ROOT / "modules/iam-policies", variables,
                                    tmp_path_factory.mktemp(f"policies-{env}"))
    return applied


def _database_url(chart: str, outputs: dict) -> str:
    """The URL the environment stack hands ``chart``, with the policy module's ``outputs``,
    the database module's database name and sample address and port."""
    known = {"module.database.address": SAMPLE_DATABASE_ADDRESS, "module.database.port": "5432",
             "module.database.database_name": _database_instance()["db_name"]}

    def value(match: re.Match) -> str:
        reference = match.group(1)
        if reference.startswith("module.policies."):
            node = outputs
            for part in reference.removeprefix("module.policies.").split("."):
                node = node[part]
            return node
        return known[reference]

    return _REFERENCE.sub(value, _handed(chart)["database.url"])


def _connect_grants(policy: str) -> list[str]:
    statements = json.loads(policy)["Statement"]
    return [s["Resource"] for s in statements if "rds-db:connect" in json.dumps(s["Action"])]


@pytest.fixture(scope="module")
def iam_logins(pg_server, admin_dsn) -> set[str]:
    """The users the schema migration lets log in with IAM tokens, on a server that, like RDS, has rds_iam."""
    name = create_database(admin_dsn)
    try:
        with autocommit(admin_dsn) as admin_conn:
            return migrated_on_rds(admin_conn, pg_server.get_uri(name))
    finally:
        localdb.drop_database(admin_dsn, name)


@pytest.mark.parametrize("chart", sorted(DATABASE_URLS))
def test_each_database_url_names_the_user_its_role_may_log_in_as_and_the_migration_makes(chart, policies,
                                                                                         iam_logins):
    roles = _module_calls("environment")
    role = roles[LOGIN_ROLES[chart]]
    [policy_output] = re.fullmatch(r"\$\{module\.policies\.(\w+)\}", role["policy"]).groups()
    for env, outputs in policies.items():
        url = _database_url(chart, outputs)
        # The components' own check: a host, a user, no password, TLS.
        host, port, user = rds_auth.check_url(url)
        params = psycopg2.extensions.parse_dsn(url)
        assert (host, port, params["dbname"], params["sslmode"]) == (SAMPLE_DATABASE_ADDRESS, 5432, "rates", "require")
        # The role that signs the tokens may log in as exactly that user, on this instance.
        resource_id = SAMPLE_POLICY_INPUTS["database_resource_id"]
        assert _connect_grants(outputs[policy_output]) == [
            f"arn:aws:rds-db:eu-west-1:123456789012:dbuser:{resource_id}/{user}"], (env, chart)
        # The schema migration makes that user and lets it log in with a token.
        assert user in iam_logins, f"{chart}'s URL logs in as {user}; the migration makes {sorted(iam_logins)}"
        assert user != _database_instance()["username"]  # never the master user


def test_the_api_s_database_user_is_read_only_and_apart_from_the_ingest_user(policies, conn):
    users = {chart: rds_auth.check_url(_database_url(chart, policies["dev"]))[2] for chart in DATABASE_URLS}
    assert users == {"rates-api": "rates_api", "rates-controller": "rates_ingest"}
    # In a migrated database (tests/schema/test_roles.py tries what each may and may not do).
    assert table_privileges(conn, users["rates-api"]) == {"SELECT"}
    assert "INSERT" in table_privileges(conn, users["rates-controller"])


@pytest.mark.kube  # helm
def test_the_api_role_trusts_the_service_account_the_api_chart_creates(policies, helm, tmp_path):
    role = _module_calls("environment")["api_role"]
    assert (role["trust_policy"], role["policy"]) == ("${module.policies.api_trust_policy}",
                                                      "${module.policies.api_policy}")
    for env, outputs in policies.items():
        docs = _render_handed(helm, "rates-api", env, tmp_path)
        [account] = [d for d in docs if d["kind"] == "ServiceAccount"]
        [deployment] = [d for d in docs if d["kind"] == "Deployment"]
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == \
            HANDED["rates-api"]["serviceAccount.iamRoleArn"][1]
        [statement] = json.loads(outputs["api_trust_policy"])["Statement"]
        subject = statement["Condition"]["StringEquals"][f"{SAMPLE_POLICY_INPUTS['oidc_issuer']}:sub"]
        assert subject == f"system:serviceaccount:{env}:{account['metadata']['name']}", env


def _plain_env(container: dict) -> dict[str, str]:
    """The container's literal environment; a variable read from a Secret fails the test."""
    secret = [v["name"] for v in container.get("env", []) if "secretKeyRef" in v.get("valueFrom", {})]
    assert secret == [], f"{container['name']} still reads {secret} from a Secret"
    return {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}


@pytest.mark.kube  # helm
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_pods_log_in_with_the_handed_url_and_only_the_migration_reads_the_secret(env, settings, helm, tmp_path):
    api_url = HANDED["rates-api"]["database.url"][1]
    docs = _render_handed(helm, "rates-api", env, tmp_path)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    api = ApiSettings.from_env(_plain_env(container))
    assert (api.database_url, api.database_iam_auth) == (api_url, True)
    # The schema migration keeps the master user's URL from the Secret.
    [migration] = [d for d in docs if d["kind"] == "Job"]
    [migrate] = migration["spec"]["template"]["spec"]["containers"]
    [database_url] = [v for v in migrate["env"] if v["name"] == "DATABASE_URL"]
    assert database_url["valueFrom"]["secretKeyRef"]["name"] == "rates-database"
    assert rds_auth.ENV_NAME not in {v["name"] for v in migrate["env"]}

    # The controller writes the Jobs' URL into each Job, which the ingest job then takes.
    ingest_url = HANDED["rates-controller"]["database.url"][1]
    docs = _render_handed(helm, "rates-controller", env, tmp_path)
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    controller = ControllerSettings.from_env(container_env(container, namespace=env))
    job = job_manifest(UploadedObject(bucket="example-rates-dev-prices", key="prices/2016/january.csv",
                                      version_id=None, etag="abc", size=1), controller.job)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == settings[f"environment/{env}"]["service_accounts"]["ingest_job"]
    [job_container] = pod["containers"]
    ingest = IngestSettings.from_env(_plain_env(job_container))
    assert (ingest.database_url, ingest.database_iam_auth) == (ingest_url, True)


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


def test_the_shared_nonprod_cluster_sends_fewer_control_plane_logs_and_every_cluster_its_audit_log(settings):
    # Each log type is paid per GB ingested; the audit log is what an incident needs.
    cluster = hcl_resource("modules/eks/main.tf", "aws_eks_cluster", "this")
    assert cluster["enabled_cluster_log_types"] == "${var.control_plane_log_types}"
    nonprod, prod = (settings[f"cluster/{name}"]["control_plane_log_types"] for name in ("nonprod", "prod"))
    assert set(nonprod) < set(prod) and "audit" in nonprod
    assert set(prod) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}


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


def test_the_queue_alarms_watch_their_own_queues_and_tell_whom_the_environment_names():
    module = TERRAFORM_ROOT / "modules/uploads"
    tree = parse_hcl((module / "alarms.tf").read_text())
    alarms = tree["locals"][0]["queue_alarms"]
    assert alarms["dead-letters"]["queue"] == "${aws_sqs_queue.dead_letter.name}"
    assert alarms["uploads-waiting"]["queue"] == "${aws_sqs_queue.uploads.name}"
    [resource] = tree["resource"][0]["aws_cloudwatch_metric_alarm"].values()
    assert resource["for_each"] == "${local.queue_alarms}" and resource["namespace"] == "AWS/SQS"
    assert resource["dimensions"] == {"QueueName": "${each.value.queue}"}
    assert resource["alarm_actions"] == resource["ok_actions"] == "${var.alarm_actions}"
    calls = [body for block in parse_hcl((TERRAFORM_ROOT / "environment/main.tf").read_text())["module"]
             for body in block.values() if body["source"] == "../modules/uploads"]
    assert [call["alarm_actions"] for call in calls] == ["${var.alarm_actions}"]


def _variables(stack: str) -> dict[str, dict]:
    return {name: body for block in parse_hcl((TERRAFORM_ROOT / stack / "variables.tf").read_text())["variable"]
            for name, body in block.items()}


def test_the_waiting_alarm_waits_longer_than_the_controller_backs_off_a_message_it_cannot_place(settings):
    # A message whose Job cannot be created is backed off, then set aside (the dead-letter
    # alarm's business); uploads-waiting is for no controller polling, or a backlog.
    from rates_controller.controller import MESSAGE_BACKOFF_SECONDS, message_backoff

    for stack in ("modules/uploads", "environment"):
        variable = _variables(stack)["upload_wait_alarm_seconds"]
        minimum = int(re.search(r"upload_wait_alarm_seconds >= (\d+)", variable["validation"][0]["condition"]).group(1))
        assert minimum >= MESSAGE_BACKOFF_SECONDS[1], stack
    for env in ENVIRONMENTS:
        receives = merged_values(env)["controller"]["maxReceives"]
        backed_off = sum(message_backoff(n) for n in range(1, receives))
        assert settings[f"environment/{env}"]["upload_wait_alarm_seconds"] > backed_off, (env, backed_off)


def test_each_environment_sets_its_waiting_alarm_as_the_module_takes_it():
    # Declared on modules/uploads alone, it kept the module's default in every environment.
    module, environment = (_variables(stack)["upload_wait_alarm_seconds"] for stack in ("modules/uploads", "environment"))
    assert environment["type"] == module["type"] and environment["default"] == module["default"]
    assert environment["validation"] == module["validation"]
    assert environment["description"] == module["description"]
    calls = [body for block in parse_hcl((TERRAFORM_ROOT / "environment/main.tf").read_text())["module"]
             for body in block.values() if body["source"] == "../modules/uploads"]
    assert [call.get("upload_wait_alarm_seconds") for call in calls] == ["${var.upload_wait_alarm_seconds}"]


def test_the_database_alarm_watches_its_own_free_storage_and_tells_whom_the_environment_names():
    tree = parse_hcl((TERRAFORM_ROOT / "modules/database/alarms.tf").read_text())
    alarm = tree["resource"][0]["aws_cloudwatch_metric_alarm"]["free_storage"]
    assert (alarm["namespace"], alarm["metric_name"]) == ("AWS/RDS", "FreeStorageSpace")
    assert alarm["dimensions"] == {"DBInstanceIdentifier": "${aws_db_instance.this.identifier}"}
    assert (alarm["statistic"], alarm["comparison_operator"]) == ("Minimum", "LessThanThreshold")
    # Half of autoscaling's trigger (10 % of the allocated size) at its least: below it,
    # autoscaling is not adding storage.
    assert tree["locals"][0]["free_storage_alarm_bytes"] == "${floor(var.storage_gib.allocated * pow(1024, 3) / 20)}"
    assert alarm["alarm_actions"] == alarm["ok_actions"] == "${var.alarm_actions}"
    calls = [body for block in parse_hcl((TERRAFORM_ROOT / "environment/main.tf").read_text())["module"]
             for body in block.values() if body["source"] == "../modules/database"]
    assert [call["alarm_actions"] for call in calls] == ["${var.alarm_actions}"]


# Memory of the RDS classes the environments use (GiB): RDS's default max_connections is
# LEAST(DBInstanceClassMemory / 9531392, 5000). A class not here fails the test below: add it.
_RDS_CLASS_GIB = {"db.t4g.micro": 1, "db.t4g.small": 2, "db.t4g.medium": 4, "db.t4g.large": 8,
                  "db.m7g.large": 8, "db.m7g.xlarge": 16, "db.r7g.large": 16, "db.r7g.xlarge": 32}


def _connections_at_full_scale(env: str) -> int:
    """The environment's database connections at its peak, as the API chart's README counts
    them: twice the API's steady figure (a rollout's surge and the old pods still draining),
    two for each ingest Job, and ten for migrations and ratesctl."""
    api, controller = merged_values(env, CHARTS / "rates-api"), merged_values(env, CONTROLLER_CHART)
    pods = api["autoscaling"]["maxReplicas"] if api["autoscaling"]["enabled"] else api["replicaCount"]
    pool = api["config"]["dbPoolSize"] or api["config"]["gunicornThreads"]
    steady = pods * api["config"]["webConcurrency"] * (pool + 1)  # + 1: the readiness probe's
    return 2 * steady + 2 * controller["controller"]["maxActiveJobs"] + 10


def test_each_database_takes_its_environment_s_connections_at_full_scale(settings):
    # A later maxReplicas, thread count or smaller class must not pass the database's limit
    # unnoticed: past it, new connections are refused and requests get 503s.
    for env in ENVIRONMENTS:
        database = settings[f"environment/{env}"]["database"]
        assert "max_connections" not in json.dumps(database), "the parameter group sets it: count with that"
        gib = _RDS_CLASS_GIB[database["instance_class"]]
        # DBInstanceClassMemory is what the engine is left, some tenth below the class's
        # memory; 3 are reserved for superusers.
        limit = min(int(gib * 2**30 * 0.85 / 9531392), 5000) - 3
        needed = _connections_at_full_scale(env)
        assert needed <= limit, f"{env}: {needed} connections at full scale, {database['instance_class']} allows ~{limit}"
