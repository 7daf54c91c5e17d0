variable "repositories" {
  description = "Names of the image repositories to create, one per deployable."
  type        = set(string)
  default     = ["rates-api", "rates-ingest", "rates-controller"]

  validation {
    condition     = alltrue([for r in var.repositories : can(regex("^[a-z0-9]+([._/-][a-z0-9]+)*$", r))])
    error_message = "Repository names are lower-case letters and digits separated by . _ - or /."
  }
}

variable "keep_tagged_images" {
  description = "How many tagged images each repository keeps; older ones expire (rollbacks need a few)."
  type        = number
  default     = 50

  validation {
    condition     = var.keep_tagged_images >= 5
    error_message = "Keep at least 5 tagged images so that recent releases can be rolled back to."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
