variable "name" {
  description = "Cluster name."
  type        = string

  validation {
    # At most 24: the network module takes the same name, and IAM role name prefixes built
    # from it (name + "-flow-logs-" there, the longest) stay within 38.
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane and nodes (the charts and tests are checked against versions.json's kubernetes_minor, 1.35; the controller chart needs 1.30 or later)."
  type        = string
  default     = "1.35"

  validation {
    # The controller chart's admission policies are admissionregistration.k8s.io/v1, new in 1.30.
    condition     = can(regex("^1\\.([3-9][0-9]|[1-9][0-9]{2})$", var.kubernetes_version))
    error_message = "kubernetes_version is a minor version of 1.30 or later, such as \"1.35\"."
  }
}

variable "subnet_ids" {
  description = "Private subnets for the control plane's network interfaces and the nodes (at least two zones)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "public_endpoint_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API over the internet. Empty keeps the endpoint private: reach it from the VPC, a VPN or a bastion."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.public_endpoint_cidrs : can(cidrnetmask(c)) && c != "0.0.0.0/0"])
    error_message = "public_endpoint_cidrs must be IPv4 CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "node_instance_types" {
  description = "EC2 instance types of the managed node group, in order of preference."
  type        = list(string)
  default     = ["m6i.large"]

  validation {
    condition     = length(var.node_instance_types) > 0
    error_message = "Give at least one instance type."
  }
}

variable "node_capacity_type" {
  description = "ON_DEMAND, or SPOT for cheap non-production clusters (ingest Jobs retry an interrupted pod without counting it against the file)."
  type        = string
  default     = "ON_DEMAND"

  validation {
    condition     = contains(["ON_DEMAND", "SPOT"], var.node_capacity_type)
    error_message = "node_capacity_type is ON_DEMAND or SPOT."
  }
}

variable "node_count" {
  description = "Node group size: min, desired (initial only; an autoscaler owns it after) and max."
  type = object({
    min     = number
    desired = number
    max     = number
  })
  default = { min = 2, desired = 3, max = 6 }

  validation {
    # min 0 lets a group be scaled to no node by hand (runbook, "Parking dev and staging");
    # a new group still starts with one.
    condition     = var.node_count.min >= 0 && var.node_count.min <= var.node_count.desired && var.node_count.desired >= 1 && var.node_count.desired <= var.node_count.max
    error_message = "node_count needs 0 <= min <= desired <= max, and desired >= 1."
  }
}

variable "node_disk_gib" {
  description = "Root volume size of each node in GiB (images and emptyDir scratch space)."
  type        = number
  default     = 50

  validation {
    condition     = var.node_disk_gib >= 20 && var.node_disk_gib <= 1000
    error_message = "node_disk_gib must be between 20 and 1000."
  }
}

variable "admin_principal_arns" {
  description = "IAM roles or users given cluster-admin through EKS access entries (the creator gets no implicit access)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/", a))])
    error_message = "admin_principal_arns must be IAM role or user ARNs."
  }
}

variable "control_plane_log_types" {
  description = "Control-plane log types sent to CloudWatch Logs. Each is paid per GB ingested; api and audit are the large ones. audit is always kept: it says who changed what."
  type        = list(string)
  default     = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  validation {
    condition     = alltrue([for t in var.control_plane_log_types : contains(["api", "audit", "authenticator", "controllerManager", "scheduler"], t)])
    error_message = "control_plane_log_types are among api, audit, authenticator, controllerManager and scheduler."
  }

  validation {
    condition     = contains(var.control_plane_log_types, "audit")
    error_message = "control_plane_log_types keeps audit: without it nobody can tell who changed or deleted what."
  }
}

variable "addon_versions" {
  description = "Versions to pin add-ons at, by name (vpc-cni, kube-proxy, coredns, metrics-server), such as { coredns = \"v1.11.4-eksbuild.2\" } (aws eks describe-addon-versions lists them). An add-on left out takes the newest build for kubernetes_version."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for name in keys(var.addon_versions) : contains(["vpc-cni", "kube-proxy", "coredns", "metrics-server"], name)])
    error_message = "addon_versions names add-ons among vpc-cni, kube-proxy, coredns and metrics-server."
  }

  validation {
    condition     = alltrue([for version in values(var.addon_versions) : can(regex("^v[0-9]+\\.[0-9]+\\.[0-9]+-eksbuild\\.[0-9]+$", version))])
    error_message = "addon_versions are EKS add-on versions such as \"v1.19.0-eksbuild.1\"."
  }
}

variable "log_retention_days" {
  description = "Days to keep control-plane logs in CloudWatch Logs."
  type        = number
  default     = 90
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
