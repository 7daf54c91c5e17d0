terraform {
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.8, < 7.0"
    }
  }

  # State per cluster, locked with S3's own lock file:
  #   terraform init -backend-config="bucket=<state bucket>" -backend-config="key=rates/env/<environment>.tfstate" -backend-config="region=<region>"
  backend "s3" {
    use_lockfile = true
    encrypt      = true
  }
}
