output "namespace" {
  description = "Namespace of the environment's Helm releases."
  value       = var.environment
}

# Values files for the charts: `terraform output -json controller_values > controller.json`,
# then `helm upgrade --install ... -f values-<env>.yaml -f controller.json` (JSON is YAML).
output "controller_values" {
  description = "Values for the rates-controller release of this environment, as a values file."
  value = {
    # The chart refuses these values in another namespace: the roles trust this one's only.
    terraformEnvironment = var.environment
    queue = {
      url           = module.uploads.queue_url
      deadLetterUrl = module.uploads.dead_letter_queue_url
      # Events for any other bucket or key are set aside as poison messages.
      bucket = module.uploads.bucket_name
      prefix = var.prices_prefix
    }
    aws            = { region = var.region }
    serviceAccount = { name = var.service_accounts.controller, roleArn = module.controller_role.arn }
    jobs           = { serviceAccount = { name = var.service_accounts.ingest_job, roleArn = module.ingest_job_role.arn } }
    networkPolicy  = { database = { cidrs = local.database_cidrs } }
    # The Jobs log in as the ingest user with IAM tokens from their role: no password.
    database = {
      url     = "postgresql://${module.policies.database_users.ingest_job}@${module.database.address}:${module.database.port}/${module.database.database_name}?sslmode=require"
      iamAuth = true
    }
  }
}

output "api_values" {
  description = "Values for the rates-api release of this environment, as a values file."
  value = {
    # The chart refuses these values in another namespace: the role trusts this one's only.
    terraformEnvironment = var.environment
    # The ALB connects from addresses in the VPC; trust its X-Forwarded-* headers only.
    config         = { forwardedAllowIps = data.aws_vpc.this.cidr_block }
    networkPolicy  = { database = { cidrs = local.database_cidrs }, sts = { cidrs = local.sts_cidrs } }
    serviceAccount = { name = var.service_accounts.api, iamRoleArn = module.api_role.arn }
    # The region its IAM tokens are signed for (the database's).
    aws = { region = var.region }
    # The API logs in as its read-only user with IAM tokens from its role: no password.
    # (The migration hook still reads the master user's URL from the rates-database Secret.)
    database = {
      url     = "postgresql://${module.policies.database_users.api}@${module.database.address}:${module.database.port}/${module.database.database_name}?sslmode=require"
      iamAuth = true
    }
  }
}

output "bucket_name" {
  description = "Bucket analysts upload price files to, under prices_prefix."
  value       = module.uploads.bucket_name
}

output "bucket_kms_key_arn" {
  description = "Key of the prices bucket: uploaders need kms:GenerateDataKey and kms:Decrypt on it."
  value       = module.uploads.bucket_kms_key_arn
}

output "queue_arns" {
  description = "The uploads queue and its dead-letter queue: send set-aside files back with aws sqs start-message-move-task --source-arn <dead_letter> --destination-arn <uploads>."
  value       = { uploads = module.uploads.queue_arn, dead_letter = module.uploads.dead_letter_queue_arn }
}

output "queue_urls" {
  description = "The uploads queue and its dead-letter queue, for the aws sqs commands of runbook/README.md and ratesctl reconcile --send."
  value       = { uploads = module.uploads.queue_url, dead_letter = module.uploads.dead_letter_queue_url }
}

output "alarm_arns" {
  description = "CloudWatch alarms, by name: the queues' dead-letters (a file set aside) and uploads-waiting (no Job for an upload in an hour), and the database's free-storage (running out with autoscaling adding none)."
  value       = merge(module.uploads.alarm_arns, module.database.alarm_arns)
}

output "database_address" {
  description = "Host name of the environment's PostgreSQL."
  value       = module.database.address
}

output "database_master_secret_arn" {
  description = "Secrets Manager secret with the master credentials; build the rates-database Secret's url from it (see README)."
  value       = module.database.master_user_secret_arn
}

output "database_master_secret_kms_key_arn" {
  description = "KMS key of the master credentials' secret: whatever reads the secret (External Secrets, a deploy role) needs kms:Decrypt on it as well as secretsmanager:GetSecretValue."
  value       = module.database.master_user_secret_kms_key_arn
}
