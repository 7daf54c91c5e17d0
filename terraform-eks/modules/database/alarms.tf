# One alarm, for the one condition that needs someone: free space running out while storage
# autoscaling adds none. Autoscaling keeps free space at or above 10 % of the allocated
# size, and that size is never below storage_gib.allocated; free space under half of
# 10 % of storage_gib.allocated therefore means autoscaling is not growing the disk: it
# is at storage_gib.max, or in RDS's wait after its last growth (hours, until that growth's
# storage optimization is done) while loads fill it faster. A full instance fails every
# load. RDS publishes no allocated size to compare free space with, and a threshold on
# storage_gib.max would fire from the first day wherever max is far above allocated
# (prod: 10 % of 1000 GiB is all of its first 100 GiB); low free space that autoscaling
# is about to add to needs nobody. At max this warns late (5 GiB of prod's 1000), so max
# is sized with room for growth and for a rewrite of the totals (terraform-eks/README.md,
# "Database storage").

locals {
  free_storage_alarm_bytes = floor(var.storage_gib.allocated * pow(1024, 3) / 20)
}

resource "aws_cloudwatch_metric_alarm" "free_storage" {
  alarm_name          = "${var.name}-free-storage"
  alarm_description   = "${aws_db_instance.this.identifier} has under ${var.storage_gib.allocated / 20} GiB free and storage autoscaling is not adding any: at its ceiling of ${var.storage_gib.max} GiB (storage_gib.max), or waiting after its last growth. When it fills, every load fails. See runbook/README.md: which tables grew, then raise storage_gib.max, prune ingest_runs, VACUUM."
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = aws_db_instance.this.identifier }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "LessThanThreshold"
  threshold           = local.free_storage_alarm_bytes
  # A stopped instance reports nothing: no data keeps the alarm as it was.
  treat_missing_data = "ignore"
  alarm_actions      = var.alarm_actions
  ok_actions         = var.alarm_actions

  tags = var.tags
}
