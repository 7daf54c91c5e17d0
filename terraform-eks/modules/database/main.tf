resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-"
  subnet_ids  = var.subnet_ids

  tags = var.tags
}

resource "aws_security_group" "this" {
  name_prefix = "${var.name}-db-"
  description = "PostgreSQL for ${var.name}: reachable from the cluster only"
  vpc_id      = var.vpc_id

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each = toset(var.client_security_group_ids)

  security_group_id            = aws_security_group.this.id
  description                  = "PostgreSQL from ${each.value}"
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  referenced_security_group_id = each.value

  tags = var.tags
}

resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-"
  family      = "postgres${var.engine_version}"
  description = "${var.name}: TLS only, slow statements logged"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }

  # A statement that waits more than deadlock_timeout (1 s) for a lock is logged with who
  # holds it: a migration behind a load, or two loads of overlapping lanes.
  parameter {
    name  = "log_lock_waits"
    value = "1"
  }

  # A session left in a transaction (an operator's BEGIN in psql, forgotten) holds back
  # vacuum on every table, and the totals tables churn with every load: ended after 10
  # minutes. The components' sessions are autocommit but for a load's, which waits
  # inside its transaction only on S3 calls, each given up within a few minutes.
  parameter {
    name  = "idle_in_transaction_session_timeout"
    value = "600000"
  }

  # Autovacuum runs that take over a second are logged, so its falling behind shows.
  parameter {
    name  = "log_autovacuum_min_duration"
    value = "1000"
  }

  tags = var.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_kms_key" "this" {
  #checkov:skip=CKV2_AWS_64:the default key policy is meant: the account administers the key and IAM policies grant its use
  description         = "${var.name}: database storage, snapshots and master password"
  enable_key_rotation = true

  tags = var.tags
}

locals {
  log_exports = ["postgresql", "upgrade"]
}

# The groups RDS exports its logs to, made here: RDS would make them itself, unencrypted
# and kept forever, and the postgresql log holds SQL text with its values
# (log_min_duration_statement).
module "logs" {
  source   = "../log-group"
  for_each = toset(local.log_exports)

  name           = "/aws/rds/instance/${var.name}/${each.key}"
  retention_days = var.log_retention_days
  tags           = var.tags
}

resource "aws_db_instance" "this" {
  identifier     = var.name
  engine         = "postgres"
  engine_version = var.engine_version
  instance_class = var.instance_class
  db_name        = "rates"
  username       = "rates_admin"

  # RDS generates and rotates the password in Secrets Manager: it never appears in
  # Terraform variables, state or the charts' values.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.this.arn

  allocated_storage     = var.storage_gib.allocated
  max_allocated_storage = var.storage_gib.max
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.this.arn

  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.this.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  publicly_accessible    = false
  multi_az               = var.multi_az

  # The API and the ingest Jobs log in as their own users with 15-minute IAM tokens
  # (rds-db:connect, granted in modules/iam-policies); the master password is the
  # schema migration's only.
  iam_database_authentication_enabled = true
  backup_retention_period             = var.backup_retention_days
  copy_tags_to_snapshot               = true
  deletion_protection                 = var.deletion_protection
  skip_final_snapshot                 = !var.deletion_protection
  final_snapshot_identifier           = var.deletion_protection ? "${var.name}-final" : null
  # Kept after the instance is deleted, for their retention period, outside throwaway
  # environments: the final snapshot alone has no point-in-time recovery.
  delete_automated_backups   = !var.deletion_protection
  auto_minor_version_upgrade = true
  #checkov:skip=CKV_AWS_293:deletion_protection is on unless the environment is declared throwaway (dev)
  # Major upgrades are a reviewed change of engine_version, applied in the maintenance window.
  allow_major_version_upgrade = false

  monitoring_interval = 60
  monitoring_role_arn = aws_iam_role.monitoring.arn

  performance_insights_enabled    = var.performance_insights
  performance_insights_kms_key_id = var.performance_insights ? aws_kms_key.this.arn : null
  enabled_cloudwatch_logs_exports = local.log_exports

  tags = var.tags

  depends_on = [aws_iam_role_policy_attachment.monitoring, module.logs]
}

# Enhanced Monitoring: OS-level metrics (CPU steal, memory, I/O) each minute.
resource "aws_iam_role" "monitoring" {
  name_prefix = "${var.name}-rds-monitoring-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "monitoring.rds.amazonaws.com" }
      Action    = "sts:AssumeRole"
      # Only for this account's databases: the service cannot be made to act for another.
      Condition = {
        StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id }
      }
    }]
  })

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}
