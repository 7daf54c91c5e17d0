variable "environment" {
  description = "Environment name; also the Kubernetes namespace its Helm releases go to."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment is one of dev, staging, prod."
  }
}

variable "region" {
  description = "AWS region (the cluster's)."
  type        = string
}

variable "cluster_name" {
  description = "EKS cluster the environment's namespace lives in (the cluster stack's cluster_name output)."
  type        = string
}

variable "bucket_name" {
  description = "Globally unique name of the prices bucket; its queues are named after it."
  type        = string
}

variable "prices_prefix" {
  description = "Key prefix under which uploads are ingested."
  type        = string
  default     = "prices/"
}

variable "max_receive_count" {
  description = "SQS deliveries before a message is dead-lettered by SQS itself (above the controller's MAX_RECEIVES)."
  type        = number
  default     = 20
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic's) notified when an alarm changes state: a file set aside in the dead-letter queue, uploads waiting over upload_wait_alarm_seconds, or the database running out of storage. None: the alarms show in CloudWatch only, which prod refuses."
  type        = list(string)
  default     = []

  validation {
    # Left empty, production's alarms would fire with nobody told.
    condition     = var.environment != "prod" || length(var.alarm_actions) > 0
    error_message = "prod needs alarm_actions, whom its alarms notify: -var='alarm_actions=[\"arn:aws:sns:<region>:<account>:<on-call topic>\"]' (or set it in prod.tfvars)."
  }
}

variable "upload_wait_alarm_seconds" {
  description = "Age of the oldest waiting upload, in seconds, above which the uploads-waiting alarm fires. Keep it above the time a burst of uploads waits for MAX_ACTIVE_JOBS."
  type        = number
  default     = 3600

  validation {
    condition     = var.upload_wait_alarm_seconds >= 900 && var.upload_wait_alarm_seconds <= 1209600
    error_message = "upload_wait_alarm_seconds must be between 900 (the controller backs a message off for up to 15 minutes) and 1209600 (the queue's fourteen-day retention)."
  }
}

variable "throwaway" {
  description = "A disposable environment: the bucket may be destroyed with files in it, the database without a final snapshot or deletion protection."
  type        = bool
  default     = false
}

variable "sts_endpoint_in_vpc" {
  description = "The cluster's VPC has an STS interface endpoint (the cluster stack's interface_endpoints has \"sts\"): the API's NetworkPolicy then allows HTTPS to the VPC only. The plan fails if the endpoint is missing."
  type        = bool
  default     = false
}

variable "database" {
  description = "Database size and resilience; engine_version is PostgreSQL's major version (the database module's default when left out)."
  type = object({
    instance_class        = string
    storage_gib           = object({ allocated = number, max = number })
    multi_az              = bool
    backup_retention_days = number
    performance_insights  = optional(bool, true)
    engine_version        = optional(string)
  })
}

variable "log_retention_days" {
  description = "Days to keep the database's logs in CloudWatch Logs."
  type        = number
  default     = 30
}

variable "service_accounts" {
  description = "ServiceAccount names the roles trust, handed to the charts in their values (serviceAccount.name, jobs.serviceAccount.name): the controller's, the ingest Jobs' and the API's."
  type = object({
    controller = string
    ingest_job = string
    api        = string
  })
  default = { controller = "rates-controller", ingest_job = "rates-ingest", api = "rates-api" }
}

variable "tags" {
  description = "Tags added to every resource, beside the stack's own."
  type        = map(string)
  default     = {}
}
