variable "oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "oidc_issuer" {
  description = "The cluster's OIDC issuer without https://, e.g. oidc.eks.eu-west-1.amazonaws.com/id/ABC123."
  type        = string

  validation {
    condition     = !startswith(var.oidc_issuer, "https://") && length(var.oidc_issuer) > 0
    error_message = "oidc_issuer is the issuer URL without its https:// scheme."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the environment (one Helm release of each chart per namespace)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a Kubernetes namespace name (RFC 1123 label)."
  }
}

variable "controller_service_account" {
  description = "ServiceAccount the controller runs as: the rates-controller chart's full name (the release name \"rates-controller\" gives \"rates-controller\")."
  type        = string
  default     = "rates-controller"
}

variable "ingest_service_account" {
  description = "ServiceAccount of the ingest Jobs: the rates-controller chart's jobs.serviceAccount.name."
  type        = string
  default     = "rates-ingest"
}

variable "api_service_account" {
  description = "ServiceAccount the API runs as: the rates-api chart's full name (the release name \"rates-api\" gives \"rates-api\")."
  type        = string
  default     = "rates-api"
}

variable "database_arn" {
  description = "ARN of the DB instance (arn:PARTITION:rds:REGION:ACCOUNT:db:NAME): the rds-db:connect grants are in its partition, region and account."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:rds:[a-z0-9-]+:[0-9]{12}:db:[a-z][a-z0-9-]*$", var.database_arn))
    error_message = "database_arn must be an RDS DB instance ARN, arn:aws:rds:REGION:ACCOUNT:db:NAME."
  }
}

variable "database_resource_id" {
  description = "Resource id of the DB instance (\"db-\" and upper-case letters and digits, not its name): rds-db:connect ARNs name the instance by it."
  type        = string

  validation {
    condition     = can(regex("^db-[A-Z0-9]+$", var.database_resource_id))
    error_message = "database_resource_id must be the instance's resource id, db- followed by upper-case letters and digits (not its identifier)."
  }
}

variable "bucket_arn" {
  description = "ARN of the prices bucket."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]+$", var.bucket_arn))
    error_message = "bucket_arn must be an S3 bucket ARN."
  }
}

variable "prices_prefix" {
  description = "Key prefix the ingest job may read (\"\" for the whole bucket)."
  type        = string
}

variable "bucket_kms_key_arn" {
  description = "ARN of the KMS key that encrypts the price files (arn:PARTITION:kms:REGION:ACCOUNT:key/ID): the Jobs may decrypt with it through S3 in its region only."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.bucket_kms_key_arn))
    error_message = "bucket_kms_key_arn must be a KMS key ARN, arn:aws:kms:REGION:ACCOUNT:key/ID (not a key id or an alias)."
  }
}

variable "queue_arn" {
  description = "ARN of the uploads queue the controller consumes."
  type        = string
}

variable "dead_letter_queue_arn" {
  description = "ARN of the dead-letter queue the controller sets files aside in."
  type        = string
}
