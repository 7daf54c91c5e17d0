# The queues' own CloudWatch alarms see what the controller's Prometheus alerts cannot: a
# message SQS dead-lettered by itself (after max_receive_count deliveries the controller
# never completed, as when it keeps crashing), and uploads that wait because no controller
# polls at all.

locals {
  queue_alarms = {
    dead-letters = {
      queue     = aws_sqs_queue.dead_letter.name
      metric    = "ApproximateNumberOfMessagesVisible"
      threshold = 0
      # Stays in alarm while a file waits there: a set-aside file needs someone.
      periods     = 1
      description = "Price files are set aside in ${aws_sqs_queue.dead_letter.name}. Each message's reason attribute says why; once the file or the release is fixed, move the messages back with a redrive whose destination is ${aws_sqs_queue.uploads.name} (README, \"Controller\"), or delete them."
    }
    uploads-waiting = {
      queue     = aws_sqs_queue.uploads.name
      metric    = "ApproximateAgeOfOldestMessage"
      threshold = var.upload_wait_alarm_seconds
      # Two periods: a burst of uploads beyond the controller's capacity waits a while by design.
      periods     = 2
      description = "An upload has waited in ${aws_sqs_queue.uploads.name} for over ${var.upload_wait_alarm_seconds} s without its Job: is the controller running (RatesControllerDown), at MAX_ACTIVE_JOBS (RatesControllerAtCapacity), or held by a full Job quota (RatesControllerQuotaFull)?"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "queue" {
  for_each = local.queue_alarms

  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = "AWS/SQS"
  metric_name         = each.value.metric
  dimensions          = { QueueName = each.value.queue }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = each.value.periods
  comparison_operator = "GreaterThanThreshold"
  threshold           = each.value.threshold
  # SQS stops sending a queue's metrics some hours after its last API call, while messages
  # may still wait there: no data keeps the alarm as it was.
  treat_missing_data = "ignore"
  alarm_actions      = var.alarm_actions
  ok_actions         = var.alarm_actions

  tags = var.tags
}
