variable "repositories" {
  description = "Names of the image repositories to create, one per deployable."
  type        = set(string)
  default     = ["rates-api", "rates-ingest", "rates-controller"]

  validation {
    condition     = alltrue([for r in var.repositories : can(regex("^[a-z0-9]+([._/-][a-z0-9]+)*$", r))])
    error_message = "Repository names are lower-case letters and digits separated by . _ - or /."
  }
}

variable "build_tag_prefixes" {
  description = "Tag prefixes of throwaway builds (branches, pull requests), of which each repository keeps the newest keep_build_images per prefix; an image that also has a release tag (release_tag_patterns) is kept."
  type        = list(string)
  default     = ["dev-", "pr-"]

  validation {
    condition     = length(var.build_tag_prefixes) > 0 && alltrue([for p in var.build_tag_prefixes : length(p) > 0])
    error_message = "Give at least one non-empty prefix."
  }
}

variable "release_tag_patterns" {
  description = "Tag patterns of releases (* stands for any characters), whose images are never expired, even while they also carry a throwaway build's tag (a release is the tested build, tagged again). The default takes versions such as 1.4.0 or v1.4.0."
  type        = list(string)
  default     = ["*.*.*"]

  validation {
    condition     = length(var.release_tag_patterns) > 0 && alltrue([for p in var.release_tag_patterns : length(p) > 0 && length(regexall("[*]", p)) <= 4])
    error_message = "Give at least one non-empty pattern, each with at most four * (ECR's limit)."
  }
}

variable "keep_build_images" {
  description = "How many of the newest throwaway builds each repository keeps."
  type        = number
  default     = 30

  validation {
    condition     = var.keep_build_images >= 1
    error_message = "keep_build_images must be at least 1."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
