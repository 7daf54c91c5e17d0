output "bucket_name" {
  description = "Bucket analysts upload price files to."
  value       = aws_s3_bucket.prices.id
}

output "bucket_arn" {
  description = "ARN of the prices bucket."
  value       = aws_s3_bucket.prices.arn
}

output "bucket_kms_key_arn" {
  description = "KMS key that encrypts the price files; uploaders need kms:GenerateDataKey and kms:Decrypt on it (multipart uploads, which the AWS CLI uses above 8 MB, need both), readers kms:Decrypt."
  value       = aws_kms_key.prices.arn
}

output "prices_prefix" {
  description = "Key prefix whose uploads are ingested."
  value       = var.prices_prefix
}

output "queue_url" {
  description = "URL of the uploads queue (the controller chart's queue.url)."
  value       = aws_sqs_queue.uploads.id
}

output "queue_arn" {
  description = "ARN of the uploads queue."
  value       = aws_sqs_queue.uploads.arn
}

output "dead_letter_queue_url" {
  description = "URL of the dead-letter queue (the controller chart's queue.deadLetterUrl)."
  value       = aws_sqs_queue.dead_letter.id
}

output "dead_letter_queue_arn" {
  description = "ARN of the dead-letter queue."
  value       = aws_sqs_queue.dead_letter.arn
}

output "alarm_arns" {
  description = "The queues' CloudWatch alarms: a file set aside, uploads waiting."
  value       = { for name, alarm in aws_cloudwatch_metric_alarm.queue : name => alarm.arn }
}
