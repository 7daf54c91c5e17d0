# The queues' own CloudWatch alarms see what the controller's Prometheus alerts cannot: a
# message SQS dead-lettered by itself (after max_receive_count deliveries the controller
# never completed, as when it keeps crashing), and uploads that wait because no controller
# polls at all.

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name        = "${var.name}-dead-letters"
  alarm_description = "Price files are set aside in ${aws_sqs_queue.dead_letter.name}. Each message's reason attribute says why; once the file or the release is fixed, move the messages back to ${aws_sqs_queue.uploads.name} (README, \"Controller\"), or delete them."
  namespace         = "AWS/SQS"
  metric_name       = "ApproximateNumberOfMessagesVisible"
  dimensions        = { QueueName = aws_sqs_queue.dead_letter.name }
  statistic         = "Maximum"
  period            = 300
  # Stays in alarm while a file waits there: a set-aside file needs someone.
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "uploads_waiting" {
  alarm_name        = "${var.name}-uploads-waiting"
  alarm_description = "An upload has waited in ${aws_sqs_queue.uploads.name} for over ${var.upload_wait_alarm_seconds} s without its Job: is the controller running (RatesControllerDown), or at MAX_ACTIVE_JOBS (RatesControllerAtCapacity)?"
  namespace         = "AWS/SQS"
  metric_name       = "ApproximateAgeOfOldestMessage"
  dimensions        = { QueueName = aws_sqs_queue.uploads.name }
  statistic         = "Maximum"
  period            = 300
  # Two periods: a burst of uploads beyond the controller's capacity waits a while by design.
  evaluation_periods  = 2
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.upload_wait_alarm_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions

  tags = var.tags
}
