locals {
  subjects = {
    controller = "system:serviceaccount:${var.namespace}:${var.controller_service_account}"
    ingest_job = "system:serviceaccount:${var.namespace}:${var.ingest_service_account}"
    api        = "system:serviceaccount:${var.namespace}:${var.api_service_account}"
  }

  # Only a token of this exact ServiceAccount, issued for STS, may assume the role.
  trust = {
    for key, subject in local.subjects : key => jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Effect    = "Allow"
        Principal = { Federated = var.oidc_provider_arn }
        Action    = "sts:AssumeRoleWithWebIdentity"
        Condition = {
          StringEquals = {
            "${var.oidc_issuer}:sub" = subject
            "${var.oidc_issuer}:aud" = "sts.amazonaws.com"
          }
        }
      }]
    })
  }

  # IAM database authentication: who may log in as which database user. The ARN names the
  # instance by its resource id, in the instance's own partition, region and account.
  database_arn = split(":", var.database_arn) # arn, partition, rds, region, account, db, name
  # The users schema migration 0010 makes and grants rds_iam, named as it names them:
  # IAM compares the name in the token with the ARN's as written, and PostgreSQL folds an
  # unquoted name to lower case. Not variables: only the migration's names can log in.
  database_users = {
    api        = "rates_api"
    ingest_job = "rates_ingest"
  }
  # S3 asks KMS in the bucket's region, and an SSE-KMS bucket's key is always in that
  # region: the key's ARN says where (arn, partition, kms, region, account, key/ID).
  bucket_region = split(":", var.bucket_kms_key_arn)[3]

  database_user_arns = {
    for key, user in local.database_users :
    key => "arn:${local.database_arn[1]}:rds-db:${local.database_arn[3]}:${local.database_arn[4]}:dbuser:${var.database_resource_id}/${user}"
  }

  # Exactly the calls in controller/rates_controller/queue.py. DeleteMessageBatch is
  # authorised as sqs:DeleteMessage.
  controller_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ConsumeUploads"
        Effect   = "Allow"
        Action   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"]
        Resource = var.queue_arn
      },
      {
        Sid      = "SetFilesAside"
        Effect   = "Allow"
        Action   = "sqs:SendMessage"
        Resource = var.dead_letter_queue_arn
      },
    ]
  })

  # Read one object version (ingest-job/rates_ingest/s3source.py: HeadObject, GetObject).
  # ListBucket, on the whole bucket, so that a missing key answers 404 (the job exits 2:
  # retrying cannot help) instead of 403 (which the job must treat as worth a retry): S3
  # decides that by ListBucket on the bucket, with no prefix in the request, so a
  # prefix condition would bring the 403 back. It shows key names of this one bucket.
  # ListBucketVersions, under the prefix, for the ListObjectVersions with which the job
  # orders two versions of a key whose times tie.
  ingest_job_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ReadPriceFiles"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:GetObjectVersion"]
        Resource = "${var.bucket_arn}/${var.prices_prefix}*"
      },
      {
        Sid      = "TellMissingFromForbidden"
        Effect   = "Allow"
        Action   = "s3:ListBucket"
        Resource = var.bucket_arn
      },
      {
        Sid       = "ListVersionsUnderThePrefix"
        Effect    = "Allow"
        Action    = "s3:ListBucketVersions"
        Resource  = var.bucket_arn
        Condition = { StringLike = { "s3:prefix" = "${var.prices_prefix}*" } }
      },
      {
        Sid      = "DecryptPriceFiles"
        Effect   = "Allow"
        Action   = "kms:Decrypt"
        Resource = var.bucket_kms_key_arn
        # Only for S3 reading the files on the Job's behalf: the role's credentials, used
        # directly against KMS, decrypt nothing with the key.
        Condition = { StringEquals = { "kms:ViaService" = "s3.${local.bucket_region}.amazonaws.com" } }
      },
      {
        Sid      = "ConnectAsIngestUser"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = local.database_user_arns.ingest_job
      },
    ]
  })

  # The API's only use of AWS: a token (generate_db_auth_token, signed in the pod) to log
  # in to PostgreSQL as its read-only user. RDS checks rds-db:connect at login.
  api_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ConnectAsApiUser"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = local.database_user_arns.api
      },
    ]
  })
}
