# Shared by the dev and staging namespaces: one NAT gateway, Spot nodes, short log retention.
name               = "rates-nonprod"
region             = "eu-west-1"
availability_zones = ["eu-west-1a", "eu-west-1b"]
vpc_cidr           = "10.41.0.0/16"
single_nat_gateway = true

node_instance_types = ["t3.large", "t3a.large", "m6i.large"]
node_capacity_type  = "SPOT"
node_count          = { min = 0, desired = 2, max = 4 }
log_retention_days  = 14

# The control plane's audit and sign-in logs only: api's is the largest, and each is paid per GB.
control_plane_log_types = ["audit", "authenticator"]
