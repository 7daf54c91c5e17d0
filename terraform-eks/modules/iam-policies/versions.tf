# No provider: this module only computes policy documents, so `terraform test` checks
# them without AWS credentials or provider plugins.
terraform {
  required_version = ">= 1.11"
}
