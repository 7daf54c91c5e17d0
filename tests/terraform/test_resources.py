"""Resource settings whose mistakes show only at apply or at a later change, which a plan
of a new stack (test_plan.py) passes without a word; read from the code."""

from tests.support.infra import hcl_resource


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
