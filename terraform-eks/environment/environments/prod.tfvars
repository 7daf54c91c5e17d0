# prod: its own cluster; a standby database in a second zone, two weeks of point-in-time recovery.
environment  = "prod"
region       = "eu-west-1"
cluster_name = "rates-prod"
bucket_name  = "example-rates-prod-prices"

log_retention_days = 365
# alarm_actions, who hears of a file set aside, uploads left waiting or the database's
# storage running out (the CloudWatch alarms), is not here: the plan refuses prod without
# it, so give your on-call topic, -var='alarm_actions=["arn:aws:sns:eu-west-1:<account>:<topic>"]'
# (terraform-eks/README.md, "Apply"), or set it here.
# The rates-prod cluster has an STS interface endpoint (its interface_endpoints).
sts_endpoint_in_vpc = true

database = {
  instance_class        = "db.r7g.large"
  storage_gib           = { allocated = 100, max = 1000 }
  multi_az              = true
  backup_retention_days = 14
}
