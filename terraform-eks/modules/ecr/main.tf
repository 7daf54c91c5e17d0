resource "aws_kms_key" "images" {
  #checkov:skip=CKV2_AWS_64:the default key policy is meant: the account administers the key and IAM policies grant its use
  description         = "ECR image encryption"
  enable_key_rotation = true

  tags = var.tags
}

resource "aws_ecr_repository" "this" {
  for_each = var.repositories

  name = each.value
  # A tag names one image forever: a rollout and its rollback run exactly what was tested.
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.images.arn
  }

  tags = var.tags
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each = aws_ecr_repository.this

  repository = each.value.name
  policy     = local.lifecycle_policy
}
