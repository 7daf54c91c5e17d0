output "address" {
  description = "Host name of the database."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "Port of the database."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Name of the application database."
  value       = aws_db_instance.this.db_name
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret with the master user name and password (JSON), managed and rotated by RDS."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "master_user_secret_kms_key_arn" {
  description = "KMS key the master user secret is encrypted with: a reader of the secret also needs kms:Decrypt on it."
  value       = aws_kms_key.this.arn
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.this.id
}

output "arn" {
  description = "ARN of the DB instance: its partition, region and account are those of the rds-db:connect ARNs."
  value       = aws_db_instance.this.arn
}

output "resource_id" {
  description = "The instance's resource id (db-...), which names it in rds-db:connect ARNs (IAM database authentication)."
  value       = aws_db_instance.this.resource_id
}

output "alarm_arns" {
  description = "The database's CloudWatch alarm: free storage running out with autoscaling adding none."
  value       = { free-storage = aws_cloudwatch_metric_alarm.free_storage.arn }
}
