# Production: its own cluster and VPC, a NAT gateway per zone, On-Demand nodes over three zones.
name               = "rates-prod"
region             = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
vpc_cidr           = "10.40.0.0/16"
single_nat_gateway = false
# STS from inside the VPC: the API's pods then need HTTPS to nowhere else (their IRSA
# credentials). Three zones' endpoint hours; the cheaper cluster goes without.
interface_endpoints = ["sts"]

# xlarge: the API's pods request a whole vCPU each, 20 of them plus a rollout's surge at
# peak, beside 8 ingest Jobs (tests/terraform/test_wiring.py checks that they fit).
node_instance_types = ["m6i.xlarge", "m7i.xlarge"]
node_capacity_type  = "ON_DEMAND"
node_count          = { min = 3, desired = 3, max = 12 }
log_retention_days  = 365

create_repositories = true
