output "namespace" {
  description = "Namespace of the environment's Helm releases."
  value       = var.environment
}

output "controller_values" {
  description = "Values for `helm upgrade --install rates-controller charts/rates-controller -n <environment>`: pass them with --set or a values file."
  value = {
    "queue.url"                   = module.uploads.queue_url
    "queue.deadLetterUrl"         = module.uploads.dead_letter_queue_url
    "aws.region"                  = var.region
    "serviceAccount.roleArn"      = module.controller_role.arn
    "jobs.serviceAccount.name"    = var.service_accounts.ingest_job
    "jobs.serviceAccount.roleArn" = module.ingest_job_role.arn
  }
}

output "bucket_name" {
  description = "Bucket analysts upload price files to, under prices_prefix."
  value       = module.uploads.bucket_name
}

output "bucket_kms_key_arn" {
  description = "Key of the prices bucket: uploaders need kms:GenerateDataKey on it."
  value       = module.uploads.bucket_kms_key_arn
}

output "database_address" {
  description = "Host name of the environment's PostgreSQL."
  value       = module.database.address
}

output "database_master_secret_arn" {
  description = "Secrets Manager secret with the master credentials; build the rates-database Secret's url from it (see README)."
  value       = module.database.master_user_secret_arn
}
