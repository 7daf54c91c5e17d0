output "controller_trust_policy" {
  description = "Trust policy of the controller's role: its ServiceAccount only."
  value       = local.trust.controller
}

output "controller_policy" {
  description = "Permissions of the controller: consume the uploads queue, send to the dead-letter queue."
  value       = local.controller_policy
}

output "ingest_job_trust_policy" {
  description = "Trust policy of the ingest Jobs' role: their ServiceAccount only."
  value       = local.trust.ingest_job
}

output "ingest_job_policy" {
  description = "Permissions of an ingest Job: read price files under the prefix, log in to the database as rates_ingest."
  value       = local.ingest_job_policy
}

output "api_trust_policy" {
  description = "Trust policy of the API's role: its ServiceAccount only."
  value       = local.trust.api
}

output "api_policy" {
  description = "Permissions of the API: log in to the database as rates_api, nothing else."
  value       = local.api_policy
}

output "database_users" {
  description = "PostgreSQL users the API (api) and the ingest Jobs (ingest_job) may log in as, for their database URLs."
  value       = local.database_users
}

output "service_account_subjects" {
  description = "Kubernetes subjects (system:serviceaccount:NS:NAME) each role trusts."
  value       = local.subjects
}
