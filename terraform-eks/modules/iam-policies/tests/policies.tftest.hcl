# terraform test (no provider, no credentials): run from this module's directory with
#   terraform init && terraform test

variables {
  oidc_provider_arn     = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC123"
  oidc_issuer           = "oidc.eks.eu-west-1.amazonaws.com/id/ABC123"
  namespace             = "staging"
  bucket_arn            = "arn:aws:s3:::acme-rates-staging-prices"
  prices_prefix         = "prices/"
  bucket_kms_key_arn    = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  queue_arn             = "arn:aws:sqs:eu-west-1:123456789012:acme-rates-staging-prices-uploads"
  dead_letter_queue_arn = "arn:aws:sqs:eu-west-1:123456789012:acme-rates-staging-prices-dead-letter"
  database_arn          = "arn:aws:rds:eu-west-1:123456789012:db:rates-staging"
  database_resource_id  = "db-ABCDEFGHIJKLMNOPQRSTUVWXY0"
}

run "roles_trust_only_their_service_account" {
  command = plan

  assert {
    condition     = jsondecode(output.controller_trust_policy).Statement[0].Condition.StringEquals["oidc.eks.eu-west-1.amazonaws.com/id/ABC123:sub"] == "system:serviceaccount:staging:rates-controller"
    error_message = "The controller's role must trust only staging's rates-controller ServiceAccount."
  }

  assert {
    condition     = jsondecode(output.ingest_job_trust_policy).Statement[0].Condition.StringEquals["oidc.eks.eu-west-1.amazonaws.com/id/ABC123:sub"] == "system:serviceaccount:staging:rates-ingest"
    error_message = "The ingest Jobs' role must trust only staging's rates-ingest ServiceAccount."
  }

  assert {
    condition     = jsondecode(output.api_trust_policy).Statement[0].Condition.StringEquals["oidc.eks.eu-west-1.amazonaws.com/id/ABC123:sub"] == "system:serviceaccount:staging:rates-api"
    error_message = "The API's role must trust only staging's rates-api ServiceAccount."
  }

  assert {
    condition = alltrue([
      for doc in [output.controller_trust_policy, output.ingest_job_trust_policy, output.api_trust_policy] :
      jsondecode(doc).Statement[0].Condition.StringEquals["oidc.eks.eu-west-1.amazonaws.com/id/ABC123:aud"] == "sts.amazonaws.com"
      && jsondecode(doc).Statement[0].Principal.Federated == var.oidc_provider_arn
      && length(jsondecode(doc).Statement) == 1
    ])
    error_message = "Each trust policy is one statement for this cluster's OIDC provider, with the STS audience."
  }
}

run "controller_may_only_consume_and_set_aside" {
  command = plan

  assert {
    # jsonencode on both sides: compares the values, not Terraform's map/object/tuple types.
    condition = jsonencode({
      for s in jsondecode(output.controller_policy).Statement : s.Resource => sort(flatten([s.Action]))
      }) == jsonencode({
      (var.queue_arn)             = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"]
      (var.dead_letter_queue_arn) = ["sqs:SendMessage"]
    })
    error_message = "The controller gets receive/delete/visibility on the uploads queue and send on the dead-letter queue, nothing else."
  }
}

run "ingest_job_reads_only_under_the_prefix" {
  command = plan

  assert {
    condition = jsonencode({
      for s in jsondecode(output.ingest_job_policy).Statement : s.Sid => s.Resource
      }) == jsonencode({
      ReadPriceFiles             = "arn:aws:s3:::acme-rates-staging-prices/prices/*"
      TellMissingFromForbidden   = "arn:aws:s3:::acme-rates-staging-prices"
      ListVersionsUnderThePrefix = "arn:aws:s3:::acme-rates-staging-prices"
      DecryptPriceFiles          = var.bucket_kms_key_arn
      ConnectAsIngestUser        = "arn:aws:rds-db:eu-west-1:123456789012:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXY0/rates_ingest"
    })
    error_message = "The ingest job reads objects under prices/, lists that prefix, decrypts with the bucket's key and logs in to the database, on nothing else."
  }

  assert {
    condition = jsonencode([
      for s in jsondecode(output.ingest_job_policy).Statement : s if contains(flatten([s.Action]), "rds-db:connect")
      ]) == jsonencode([{
        Sid      = "ConnectAsIngestUser"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = "arn:aws:rds-db:eu-west-1:123456789012:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXY0/rates_ingest"
    }])
    error_message = "The ingest job may log in as rates_ingest on this instance only: one statement, rds-db:connect, no condition."
  }

  assert {
    condition     = length([for s in jsondecode(output.ingest_job_policy).Statement : s if anytrue([for a in flatten([s.Action]) : startswith(a, "rds")]) && s.Sid != "ConnectAsIngestUser"]) == 0
    error_message = "No other statement of the ingest job's grants an RDS action."
  }

  assert {
    condition     = [for s in jsondecode(output.ingest_job_policy).Statement : s.Condition if s.Sid == "ListVersionsUnderThePrefix"][0].StringLike["s3:prefix"] == "prices/*"
    error_message = "Listing versions is limited to the prices prefix."
  }

  assert {
    condition = jsonencode([for s in jsondecode(output.ingest_job_policy).Statement : lookup(s, "Condition", null) if s.Sid == "DecryptPriceFiles"][0]) == jsonencode({
      StringEquals = { "kms:ViaService" = "s3.eu-west-1.amazonaws.com" }
    })
    error_message = "The ingest job decrypts with the bucket's key only through S3, in the key's region (kms:ViaService), never by calling KMS itself."
  }

  assert {
    condition     = [for s in jsondecode(output.ingest_job_policy).Statement : lookup(s, "Condition", null) if s.Sid == "TellMissingFromForbidden"][0] == null
    error_message = "ListBucket has no condition: S3 asks for it, without a prefix, to answer 404 for a missing key."
  }

  assert {
    condition     = !strcontains(output.ingest_job_policy, "Put") && !strcontains(output.ingest_job_policy, "Delete") && !strcontains(output.ingest_job_policy, "\"*\"")
    error_message = "The ingest job never writes or deletes, and has no wildcard resource."
  }
}

run "api_may_only_connect_as_its_database_user" {
  command = plan

  assert {
    # The whole document: one statement, so nothing else is granted.
    condition = jsonencode(jsondecode(output.api_policy)) == jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Sid      = "ConnectAsApiUser"
        Effect   = "Allow"
        Action   = "rds-db:connect"
        Resource = "arn:aws:rds-db:eu-west-1:123456789012:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXY0/rates_api"
      }]
    })
    error_message = "The API may log in to this instance as rates_api, and do nothing else."
  }

  assert {
    condition     = jsonencode(output.database_users) == jsonencode({ api = "rates_api", ingest_job = "rates_ingest" })
    error_message = "The database users are the schema migration's: rates_api and rates_ingest."
  }
}

run "database_grants_follow_the_instance" {
  command = plan

  variables {
    database_arn         = "arn:aws-cn:rds:cn-north-1:210987654321:db:rates-prod"
    database_resource_id = "db-Z9Y8X7W6V5"
  }

  assert {
    condition     = jsondecode(output.api_policy).Statement[0].Resource == "arn:aws-cn:rds-db:cn-north-1:210987654321:dbuser:db-Z9Y8X7W6V5/rates_api"
    error_message = "The API's grant is in the instance's partition, region and account, for the API's user."
  }

  assert {
    condition     = [for s in jsondecode(output.ingest_job_policy).Statement : s.Resource if s.Sid == "ConnectAsIngestUser"][0] == "arn:aws-cn:rds-db:cn-north-1:210987654321:dbuser:db-Z9Y8X7W6V5/rates_ingest"
    error_message = "The ingest job's grant is in the instance's partition, region and account, for the ingest user."
  }

}

run "decrypting_follows_the_keys_region" {
  command = plan

  variables {
    bucket_kms_key_arn = "arn:aws:kms:us-east-2:123456789012:key/11111111-2222-3333-4444-555555555555"
  }

  assert {
    condition     = [for s in jsondecode(output.ingest_job_policy).Statement : s.Condition.StringEquals["kms:ViaService"] if s.Sid == "DecryptPriceFiles"][0] == "s3.us-east-2.amazonaws.com"
    error_message = "kms:ViaService names S3 in the key's (and so the bucket's) region."
  }
}

run "bucket_key_is_a_key_arn" {
  command = plan

  variables {
    bucket_kms_key_arn = "alias/rates-prices"
  }

  expect_failures = [var.bucket_kms_key_arn]
}

run "whole_bucket_when_no_prefix" {
  command = plan

  variables {
    prices_prefix = ""
  }

  assert {
    condition     = [for s in jsondecode(output.ingest_job_policy).Statement : s.Resource if s.Sid == "ReadPriceFiles"][0] == "arn:aws:s3:::acme-rates-staging-prices/*"
    error_message = "With no prefix the job reads any object of the bucket (and still only that bucket)."
  }
}

run "namespace_must_be_a_kubernetes_name" {
  command = plan

  variables {
    namespace = "Prod_1"
  }

  expect_failures = [var.namespace]
}

run "issuer_without_scheme" {
  command = plan

  variables {
    oidc_issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC123"
  }

  expect_failures = [var.oidc_issuer]
}

run "resource_id_is_not_the_instance_name" {
  command = plan

  variables {
    database_resource_id = "rates-staging"
  }

  expect_failures = [var.database_resource_id]
}

run "database_arn_is_an_instance_arn" {
  command = plan

  variables {
    database_arn = "arn:aws:rds:eu-west-1:123456789012:cluster:rates-staging"
  }

  expect_failures = [var.database_arn]
}
