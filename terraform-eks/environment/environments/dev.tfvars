# dev: smallest everything, in the shared non-production cluster; disposable.
environment  = "dev"
region       = "eu-west-1"
cluster_name = "rates-nonprod"
bucket_name  = "example-rates-dev-prices"
throwaway    = true

log_retention_days = 14

database = {
  instance_class        = "db.t4g.micro"
  storage_gib           = { allocated = 20, max = 50 }
  multi_az              = false
  backup_retention_days = 1
  performance_insights  = false # a throwaway database; and not every micro class offers it
}
