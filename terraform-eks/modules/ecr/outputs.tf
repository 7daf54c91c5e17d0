output "repository_urls" {
  description = "Image repository URL by name, for the charts' image.repository values."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.repository_url }
}

output "repository_arns" {
  description = "Repository ARN by name, for CI push permissions."
  value       = { for name, repo in aws_ecr_repository.this : name => repo.arn }
}
