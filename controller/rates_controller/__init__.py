"""Creates one Kubernetes Job per price file uploaded to S3, from S3 event notifications in SQS."""
