# SQS-managed encryption rather than a KMS key: S3 cannot send event notifications to a
# queue encrypted with the AWS-managed SQS key, and this keeps the key out of S3's path.
# The controller sets a message aside by sending its body to the dead-letter queue with a
# reason of up to 4,000 characters in attributes, which count toward the size limit: the
# dead-letter queue takes SQS's largest messages, four times the uploads queue's, so that
# any message the uploads queue took (S3's events are a few kB) fits with its reason.
resource "aws_sqs_queue" "dead_letter" {
  name                      = "${var.name}-dead-letter"
  message_retention_seconds = var.dead_letter_retention_days * 86400
  max_message_size          = 1048576
  sqs_managed_sse_enabled   = true

  tags = var.tags
}

resource "aws_sqs_queue" "uploads" {
  name = "${var.name}-uploads"
  # SQS's longest: an expired message is dropped, not dead-lettered, and its file never
  # loads, so waiting files should outlast a long outage of the controller.
  message_retention_seconds = 14 * 86400
  max_message_size          = 262144
  # The controller sets each message's visibility itself when it receives it.
  visibility_timeout_seconds = 60
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = var.tags
}

# Only the uploads queue may redrive into the dead-letter queue.
resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.uploads.arn]
  })
}

resource "aws_sqs_queue_policy" "uploads" {
  queue_url = aws_sqs_queue.uploads.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "PricesBucketNotifies"
        Effect    = "Allow"
        Principal = { Service = "s3.amazonaws.com" }
        Action    = "sqs:SendMessage"
        Resource  = aws_sqs_queue.uploads.arn
        Condition = {
          ArnEquals    = { "aws:SourceArn" = aws_s3_bucket.prices.arn }
          StringEquals = { "aws:SourceAccount" = data.aws_caller_identity.current.account_id }
        }
      },
      local.tls_only.uploads,
    ]
  })
}

resource "aws_sqs_queue_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [local.tls_only.dead_letter]
  })
}

resource "aws_s3_bucket_notification" "prices" {
  bucket = aws_s3_bucket.prices.id

  queue {
    queue_arn     = aws_sqs_queue.uploads.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = var.prices_prefix == "" ? null : var.prices_prefix
  }

  # S3 checks that it may send to the queue when the notification is created.
  depends_on = [aws_sqs_queue_policy.uploads]
}
