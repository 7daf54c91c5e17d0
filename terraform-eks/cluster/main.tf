module "network" {
  source = "../modules/network"

  name                    = var.name
  cidr                    = var.vpc_cidr
  availability_zones      = var.availability_zones
  single_nat_gateway      = var.single_nat_gateway
  interface_endpoints     = var.interface_endpoints
  flow_log_retention_days = var.log_retention_days
}

module "eks" {
  source = "../modules/eks"

  name                    = var.name
  kubernetes_version      = var.kubernetes_version
  addon_versions          = var.addon_versions
  subnet_ids              = module.network.private_subnet_ids
  public_endpoint_cidrs   = var.public_endpoint_cidrs
  admin_principal_arns    = var.admin_principal_arns
  node_instance_types     = var.node_instance_types
  node_capacity_type      = var.node_capacity_type
  node_count              = var.node_count
  log_retention_days      = var.log_retention_days
  control_plane_log_types = var.control_plane_log_types
}

# Images are promoted between environments by tag, so every cluster's stack would create
# the same repositories; the production cluster's stack owns them (create_repositories).
module "ecr" {
  source = "../modules/ecr"
  count  = var.create_repositories ? 1 : 0
}
