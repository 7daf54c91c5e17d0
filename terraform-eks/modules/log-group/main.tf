data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

data "aws_region" "current" {}

locals {
  account = data.aws_caller_identity.current.account_id
  arn     = "arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.region}:${local.account}:log-group:${var.name}"
}

# A key of the group's own, which CloudWatch Logs may use for this group only.
resource "aws_kms_key" "this" {
  description         = "CloudWatch Logs group ${var.name}"
  enable_key_rotation = true
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${local.account}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsUsesItForThisGroupOnly"
        Effect    = "Allow"
        Principal = { Service = "logs.${data.aws_region.current.region}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = { ArnEquals = { "kms:EncryptionContext:aws:logs:arn" = local.arn } }
      },
    ]
  })

  tags = var.tags
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338:retention is per environment (log_retention_days): a year in production, two weeks in non-production
  name              = var.name
  retention_in_days = var.retention_days
  kms_key_id        = aws_kms_key.this.arn

  tags = var.tags
}
