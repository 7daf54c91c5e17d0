provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      "app.kubernetes.io/part-of" = "rates-platform"
      "rates-platform/stack"      = "environment"
      "rates-platform/env"        = var.environment
    })
  }
}
