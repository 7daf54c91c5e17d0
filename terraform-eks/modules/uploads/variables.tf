variable "name" {
  description = "Name of the bucket and prefix of the queue names, e.g. \"acme-rates-prod-prices\". Bucket names are global: include something of your own."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", var.name))
    error_message = "name must be a valid S3 bucket name: 3-63 lower-case letters, digits and hyphens."
  }
}

variable "prices_prefix" {
  description = "Only objects under this key prefix notify the queue (\"\" for the whole bucket)."
  type        = string
  default     = "prices/"

  validation {
    condition     = var.prices_prefix == "" || endswith(var.prices_prefix, "/")
    error_message = "prices_prefix is empty or ends with \"/\"."
  }
}

variable "max_receive_count" {
  description = "Deliveries after which SQS itself moves a message to the dead-letter queue. Keep it above the controller's MAX_RECEIVES, so that the controller sets a file aside with its reason first; this is the backstop for messages the controller never gets to."
  type        = number
  default     = 20

  validation {
    condition     = var.max_receive_count >= 2 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 2 and 1000."
  }
}

variable "dead_letter_retention_days" {
  description = "Days a set-aside file's message stays in the dead-letter queue (SQS allows at most 14). A message SQS moves there itself, after max_receive_count deliveries, keeps the time it first entered the uploads queue, so it stays this long less the days it spent there; the ones the controller sets aside are sent anew and stay the whole time."
  type        = number
  default     = 14

  validation {
    condition     = var.dead_letter_retention_days >= 1 && var.dead_letter_retention_days <= 14
    error_message = "dead_letter_retention_days must be between 1 and 14."
  }
}

variable "noncurrent_version_days" {
  description = "Days an overwritten or deleted price file's earlier versions are kept (a Job that is retried still reads the version it was created for); the newest earlier version of each key is kept whatever its age."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds files. Only for throwaway environments."
  type        = bool
  default     = false
}

variable "alarm_actions" {
  description = "ARNs notified when an alarm (a file set aside, uploads waiting) changes state, e.g. an SNS topic's. None: the alarms are only seen in CloudWatch."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.alarm_actions : startswith(arn, "arn:")])
    error_message = "alarm_actions are ARNs (arn:...)."
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

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
