data "aws_caller_identity" "current" {}

resource "aws_kms_key" "prices" {
  #checkov:skip=CKV2_AWS_64:the default key policy is meant: the account administers the key and IAM policies grant its use
  description         = "${var.name}: price files at rest"
  enable_key_rotation = true

  tags = var.tags
}

resource "aws_s3_bucket" "prices" {
  #checkov:skip=CKV_AWS_18:no access logs: each run records its file's uploader (S3's principal id, ingest_runs.uploaded_by); the complete record of who uploaded or read a file is CloudTrail S3 data events, which this Terraform does not configure (billed per event; see terraform-eks/README.md)
  #checkov:skip=CKV_AWS_144:no replica: a price file is an analyst's upload that can be uploaded again, and versioning keeps overwritten ones
  bucket        = var.name
  force_destroy = var.force_destroy

  tags = var.tags
}

# The ingest job loads the exact version a notification names; versions also keep an
# overwritten file recoverable.
resource "aws_s3_bucket_versioning" "prices" {
  bucket = aws_s3_bucket.prices.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "prices" {
  bucket = aws_s3_bucket.prices.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.prices.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "prices" {
  bucket = aws_s3_bucket.prices.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "prices" {
  bucket = aws_s3_bucket.prices.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

locals {
  # The statement each resource policy here starts with: nothing over plain HTTP.
  tls_only = {
    for name, target in {
      bucket      = { action = "s3:*", resources = [aws_s3_bucket.prices.arn, "${aws_s3_bucket.prices.arn}/*"] }
      uploads     = { action = "sqs:*", resources = [aws_sqs_queue.uploads.arn] }
      dead_letter = { action = "sqs:*", resources = [aws_sqs_queue.dead_letter.arn] }
      } : name => {
      Sid       = "TLSOnly"
      Effect    = "Deny"
      Principal = "*"
      Action    = target.action
      Resource  = target.resources
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }
  }
}

resource "aws_s3_bucket_policy" "prices" {
  bucket = aws_s3_bucket.prices.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      local.tls_only.bucket,
      # Files the ingest Jobs could not read, refused at the upload rather than retried for
      # the better part of an hour and then set aside: a customer-provided key (SSE-C), or a
      # KMS key other than the bucket's, which the Jobs' role may not use.
      {
        Sid       = "NoCustomerProvidedKeys"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = "${aws_s3_bucket.prices.arn}/*"
        Condition = { Null = { "s3:x-amz-server-side-encryption-customer-algorithm" = "false" } }
      },
      {
        Sid       = "NoOtherKmsKeys"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = "${aws_s3_bucket.prices.arn}/*"
        Condition = {
          Null            = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = "false" }
          StringNotEquals = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = [aws_kms_key.prices.arn, aws_kms_key.prices.key_id] }
        }
      },
      # And S3's own keys (SSE-S3) asked for by name: readable, but outside the bucket key's
      # policy, rotation and KMS audit trail. Uploads that ask for nothing get the bucket's.
      {
        Sid       = "NoOtherEncryption"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = "${aws_s3_bucket.prices.arn}/*"
        Condition = {
          Null            = { "s3:x-amz-server-side-encryption" = "false" }
          StringNotEquals = { "s3:x-amz-server-side-encryption" = ["aws:kms", "aws:kms:dsse"] }
        }
      },
    ]
  })

  depends_on = [aws_s3_bucket_public_access_block.prices]
}

resource "aws_s3_bucket_lifecycle_configuration" "prices" {
  bucket = aws_s3_bucket.prices.id

  rule {
    id     = "expire-earlier-versions"
    status = "Enabled"

    filter {}

    # The newest earlier version of each key stays whatever its age: a deleted key's last
    # file, which a rebuild of the database may bring back by hand, and the file kept by a
    # key whose newest upload was rejected, which a rebuild sends (README, "Uploads the database missed").
    noncurrent_version_expiration {
      noncurrent_days           = var.noncurrent_version_days
      newer_noncurrent_versions = 1
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.prices]
}
