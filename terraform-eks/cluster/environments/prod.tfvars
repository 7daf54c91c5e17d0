# Production: its own cluster and VPC, a NAT gateway per zone, On-Demand nodes over three zones.
name               = "rates-prod"
region             = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
vpc_cidr           = "10.40.0.0/16"
single_nat_gateway = false

node_instance_types = ["m6i.large", "m7i.large"]
node_capacity_type  = "ON_DEMAND"
node_count          = { min = 3, desired = 3, max = 9 }
log_retention_days  = 365

create_repositories = true
