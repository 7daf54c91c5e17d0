data "aws_partition" "current" {}
data "aws_default_tags" "current" {}


locals {
  partition = data.aws_partition.current.partition
}

resource "aws_kms_key" "secrets" {
  #checkov:skip=CKV2_AWS_64:the default key policy is meant: the account administers the key and IAM policies grant its use
  description         = "${var.name} EKS envelope encryption of Kubernetes Secrets"
  enable_key_rotation = true

  tags = var.tags
}

# Control-plane logs go to this group; creating it before the cluster sets its retention
# and key, instead of EKS creating an unencrypted one that never expires.
module "logs" {
  source = "../log-group"

  name           = "/aws/eks/${var.name}/cluster"
  retention_days = var.log_retention_days
  tags           = var.tags
}

resource "aws_iam_role" "cluster" {
  name_prefix = "${var.name}-cluster-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

resource "aws_eks_cluster" "this" {
  name     = var.name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = length(var.public_endpoint_cidrs) > 0
    public_access_cidrs     = length(var.public_endpoint_cidrs) > 0 ? var.public_endpoint_cidrs : null
  }

  # Access entries only: who administers the cluster is in Terraform, not in a ConfigMap,
  # and whoever ran the first apply keeps no hidden admin rights.
  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = false
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.secrets.arn
    }
  }

  enabled_cluster_log_types = var.control_plane_log_types

  # Standard support only: a version past it is upgraded by AWS rather than billed as
  # extended support. Keep kubernetes_version current instead.
  upgrade_policy {
    support_type = "STANDARD"
  }

  tags = var.tags

  depends_on = [
    aws_iam_role_policy_attachment.cluster,
    module.logs,
  ]
}

# IAM roles for service accounts: pods get short-lived credentials for their own role.
resource "aws_iam_openid_connect_provider" "this" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]

  tags = var.tags
}

locals {
  oidc_issuer = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

# The VPC CNI's own role (IRSA), instead of AmazonEKS_CNI_Policy on the node role: there,
# every pod on the host network could create and attach network interfaces and assign
# addresses. Trusted like the environments' roles: this one ServiceAccount's token, for STS.
resource "aws_iam_role" "vpc_cni" {
  name_prefix = "${var.name}-vpc-cni-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = aws_iam_openid_connect_provider.this.arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_issuer}:sub" = "system:serviceaccount:kube-system:aws-node"
          "${local.oidc_issuer}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "vpc_cni" {
  role       = aws_iam_role.vpc_cni.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKS_CNI_Policy"
}

resource "aws_eks_access_entry" "admin" {
  for_each = toset(var.admin_principal_arns)

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value

  tags = var.tags
}

resource "aws_eks_access_policy_association" "admin" {
  for_each = toset(var.admin_principal_arns)

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }

  depends_on = [aws_eks_access_entry.admin]
}

locals {
  # Networking add-ons go on before the nodes, so that a node joins with the CNI (and its
  # network policy agent) already in its final configuration; the others are Deployments
  # and need nodes to become healthy.
  node_addons = {
    # The VPC CNI enforces the charts' NetworkPolicies only with this switch on.
    "vpc-cni"    = jsonencode({ enableNetworkPolicy = "true" })
    "kube-proxy" = null
  }
  # The add-ons' IRSA roles: EKS annotates their ServiceAccounts with them.
  addon_roles = {
    "vpc-cni" = aws_iam_role.vpc_cni.arn
  }
  workload_addons = {
    "coredns" = null
    # Feeds the API chart's HorizontalPodAutoscaler.
    "metrics-server" = null
  }
}

# The newest build of each add-on for the cluster's version: raising kubernetes_version
# moves the add-ons (and the nodes, below) along with the control plane. So does AWS
# publishing a build, at the next apply (over local changes: OVERWRITE); addon_versions pins
# any of them. Not EKS's default build: usually older than the newest, it would downgrade
# the add-ons of every cluster applied before.
data "aws_eks_addon_version" "this" {
  for_each = merge(local.node_addons, local.workload_addons)

  addon_name         = each.key
  kubernetes_version = aws_eks_cluster.this.version
  most_recent        = true
}

resource "aws_eks_addon" "node" {
  for_each = local.node_addons

  cluster_name         = aws_eks_cluster.this.name
  addon_name           = each.key
  addon_version        = lookup(var.addon_versions, each.key, data.aws_eks_addon_version.this[each.key].version)
  configuration_values = each.value
  # The role exists (and holds its policy) before the add-on: the OIDC provider is made
  # right after the cluster, and the node group waits for these add-ons, so the CNI has its
  # role when the first node joins.
  service_account_role_arn = lookup(local.addon_roles, each.key, null)
  # EKS installs self-managed copies of these at bootstrap; the managed add-on takes them over.
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  tags = var.tags

  # The role's policy before the CNI uses the role. (Not the node role's attachments: a
  # cluster that had the CNI policy there moves with -target on this resource first, and
  # that must leave them alone; README, "A cluster applied before ...".)
  depends_on = [aws_iam_role_policy_attachment.vpc_cni]
}

resource "aws_eks_addon" "workload" {
  for_each = local.workload_addons

  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.key
  addon_version               = lookup(var.addon_versions, each.key, data.aws_eks_addon_version.this[each.key].version)
  configuration_values        = each.value
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  tags = var.tags

  depends_on = [aws_eks_node_group.this]
}
