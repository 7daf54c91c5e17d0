variable "name" {
  description = "Name prefix for the VPC and everything in it; also the EKS cluster name used in subnet discovery tags."
  type        = string

  validation {
    # At most 24: IAM role name prefixes built from it (name + "-flow-logs-") stay within 38.
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "cidr" {
  description = "IPv4 CIDR of the VPC. Each availability zone gets one public and one private subnet carved out of it."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.cidr)) && tonumber(split("/", var.cidr)[1]) <= 20
    error_message = "cidr must be an IPv4 CIDR block of /20 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones to spread subnets over: two or three (EKS needs two; the subnet layout has room for three)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 3
    error_message = "Give two or three availability zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheap, for dev and staging) instead of one per zone (production: a zone outage keeps egress in the others)."
  type        = bool
  default     = false
}

variable "interface_endpoints" {
  description = "AWS services to reach through interface endpoints in the private subnets, by the last part of their endpoint name (\"sts\", \"sqs\", \"ecr.api\"). Each costs per hour and zone; \"sts\" lets the API's NetworkPolicy pin its HTTPS egress to the VPC."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for service in var.interface_endpoints : can(regex("^[a-z0-9]+([.-][a-z0-9]+)*$", service)) && !startswith(service, "com.")]) && length(distinct(var.interface_endpoints)) == length(var.interface_endpoints)
    error_message = "interface_endpoints are distinct service names such as \"sts\" or \"ecr.api\", without the com.amazonaws.<region>. prefix."
  }
}

variable "flow_log_retention_days" {
  description = "Days to keep VPC flow logs in CloudWatch Logs."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
