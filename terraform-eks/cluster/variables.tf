variable "name" {
  description = "Cluster name, 3-24 characters; also names its VPC. One cluster can hold several environments, one namespace each. (The eks and network modules check it.)"
  type        = string
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "availability_zones" {
  description = "Zones of the region to spread subnets and nodes over: two or three. (The network module checks the number.)"
  type        = list(string)

  validation {
    # Another region's zones plan without a word, and fail only at apply, on the subnets.
    condition     = alltrue([for zone in var.availability_zones : startswith(zone, var.region) && can(regex("^[a-z]$", trimprefix(zone, var.region)))])
    error_message = "availability_zones are zones of the region, ${var.region}: its name and a letter, such as \"${var.region}a\"."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the cluster's VPC; must not overlap networks it is peered with."
  type        = string
  default     = "10.40.0.0/16"
}

variable "single_nat_gateway" {
  description = "One NAT gateway for the whole VPC (cheaper, for non-production) instead of one per zone."
  type        = bool
  default     = false
}

variable "interface_endpoints" {
  description = "AWS services reached through interface endpoints in the VPC (\"sts\": the environments on this cluster can then pin the API's HTTPS egress to the VPC; set their sts_endpoint_in_vpc). Each costs per hour and zone. (The network module checks it.)"
  type        = list(string)
  default     = []
}

variable "kubernetes_version" {
  description = "Kubernetes minor version, 1.30 or later (the default is versions.json's kubernetes_minor, which the tests run)."
  type        = string
  default     = "1.35"
}

variable "addon_versions" {
  description = "Versions to pin the cluster's add-ons at, by name (vpc-cni, kube-proxy, coredns, metrics-server); an add-on left out takes the newest build for kubernetes_version. (The eks module checks it.)"
  type        = map(string)
  default     = {}
}

variable "public_endpoint_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API from the internet; empty for a private endpoint."
  type        = list(string)
  default     = []
}

variable "admin_principal_arns" {
  description = "IAM roles or users that administer the cluster (EKS access entries); at least one."
  type        = list(string)
  default     = []

  validation {
    # The cluster's creator gets no access of its own (bootstrap_cluster_creator_admin_permissions
    # is off): without an administrator, nobody could reach the cluster after the apply.
    condition     = length(var.admin_principal_arns) > 0
    error_message = "Name at least one administrator in admin_principal_arns (-var='admin_principal_arns=[\"arn:aws:iam::<account>:role/<admins>\"]'): nobody else can reach the cluster."
  }
}

variable "node_instance_types" {
  description = "Instance types of the node group."
  type        = list(string)
  default     = ["m6i.large"]
}

variable "node_capacity_type" {
  description = "ON_DEMAND or SPOT."
  type        = string
  default     = "ON_DEMAND"
}

variable "node_count" {
  description = "Node group min, initial desired and max size."
  type = object({
    min     = number
    desired = number
    max     = number
  })
  default = { min = 2, desired = 3, max = 6 }
}

variable "control_plane_log_types" {
  description = "Control-plane log types sent to CloudWatch Logs (the eks module checks them; audit is always kept)."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
}

variable "log_retention_days" {
  description = "Days to keep control-plane and VPC flow logs."
  type        = number
  default     = 90
}

variable "tags" {
  description = "Tags added to every resource, beside the stack's own."
  type        = map(string)
  default     = {}
}

variable "create_repositories" {
  description = "Create the three image repositories in this stack. Exactly one stack per account does (images move between environments by tag, not by copy)."
  type        = bool
  default     = false
}
