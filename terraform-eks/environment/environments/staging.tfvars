# staging: production's shape at a fraction of its size, in the shared non-production cluster.
environment  = "staging"
region       = "eu-west-1"
cluster_name = "rates-nonprod"
bucket_name  = "example-rates-staging-prices"

log_retention_days = 14

database = {
  instance_class        = "db.t4g.medium"
  storage_gib           = { allocated = 20, max = 100 }
  multi_az              = false
  backup_retention_days = 7
}
