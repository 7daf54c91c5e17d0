variable "name" {
  description = "Name of the IAM role."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.name))
    error_message = "name must be a valid IAM role name of at most 64 characters."
  }
}

variable "trust_policy" {
  description = "Assume-role policy (JSON) naming the ServiceAccount allowed to use the role; from the iam-policies module."
  type        = string
}

variable "policy" {
  description = "Inline permissions policy (JSON) of the role; from the iam-policies module."
  type        = string
}

variable "max_session_hours" {
  description = "Longest session a pod's credentials last before the SDK refreshes them."
  type        = number
  default     = 1

  validation {
    condition     = var.max_session_hours >= 1 && var.max_session_hours <= 12
    error_message = "max_session_hours must be between 1 and 12."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
