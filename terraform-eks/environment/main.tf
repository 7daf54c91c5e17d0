data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

data "aws_iam_openid_connect_provider" "this" {
  url = data.aws_eks_cluster.this.identity[0].oidc[0].issuer
}

data "aws_vpc" "this" {
  id = data.aws_eks_cluster.this.vpc_config[0].vpc_id
}

# The database lives in the cluster's private subnets: what the charts' NetworkPolicies
# let their pods reach on 5432.
data "aws_subnet" "cluster" {
  for_each = toset(data.aws_eks_cluster.this.vpc_config[0].subnet_ids)

  id = each.value
}

# Looked up, not assumed: a plan for an environment that expects it fails without it.
data "aws_vpc_endpoint" "sts" {
  count = var.sts_endpoint_in_vpc ? 1 : 0

  vpc_id       = data.aws_vpc.this.id
  service_name = "com.amazonaws.${var.region}.sts"
  state        = "available"
}

locals {
  # Where the API's pods may send HTTPS (for STS): the VPC, when STS is answered there;
  # empty lets the chart allow any address.
  sts_cidrs      = [for endpoint in data.aws_vpc_endpoint.sts : data.aws_vpc.this.cidr_block]
  database_cidrs = sort([for subnet in data.aws_subnet.cluster : subnet.cidr_block])
  name           = "rates-${var.environment}"
  vpc            = data.aws_eks_cluster.this.vpc_config[0]
  oidc_issuer    = replace(data.aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
}

module "uploads" {
  source = "../modules/uploads"

  name                      = var.bucket_name
  prices_prefix             = var.prices_prefix
  max_receive_count         = var.max_receive_count
  alarm_actions             = var.alarm_actions
  upload_wait_alarm_seconds = var.upload_wait_alarm_seconds
  force_destroy             = var.throwaway
}

module "database" {
  source = "../modules/database"

  name                      = local.name
  vpc_id                    = local.vpc.vpc_id
  subnet_ids                = local.vpc.subnet_ids
  client_security_group_ids = [local.vpc.cluster_security_group_id]
  instance_class            = var.database.instance_class
  storage_gib               = var.database.storage_gib
  multi_az                  = var.database.multi_az
  backup_retention_days     = var.database.backup_retention_days
  performance_insights      = var.database.performance_insights
  engine_version            = var.database.engine_version
  log_retention_days        = var.log_retention_days
  deletion_protection       = !var.throwaway
  alarm_actions             = var.alarm_actions
}

module "policies" {
  source = "../modules/iam-policies"

  oidc_provider_arn          = data.aws_iam_openid_connect_provider.this.arn
  oidc_issuer                = local.oidc_issuer
  namespace                  = var.environment
  controller_service_account = var.service_accounts.controller
  ingest_service_account     = var.service_accounts.ingest_job
  api_service_account        = var.service_accounts.api
  bucket_arn                 = module.uploads.bucket_arn
  prices_prefix              = var.prices_prefix
  bucket_kms_key_arn         = module.uploads.bucket_kms_key_arn
  queue_arn                  = module.uploads.queue_arn
  dead_letter_queue_arn      = module.uploads.dead_letter_queue_arn
  database_arn               = module.database.arn
  database_resource_id       = module.database.resource_id
}

module "controller_role" {
  source = "../modules/irsa-role"

  name         = "${local.name}-controller"
  trust_policy = module.policies.controller_trust_policy
  policy       = module.policies.controller_policy
}

module "ingest_job_role" {
  source = "../modules/irsa-role"

  name         = "${local.name}-ingest-job"
  trust_policy = module.policies.ingest_job_trust_policy
  policy       = module.policies.ingest_job_policy
}

module "api_role" {
  source = "../modules/irsa-role"

  name         = "${local.name}-api"
  trust_policy = module.policies.api_trust_policy
  policy       = module.policies.api_policy
}
