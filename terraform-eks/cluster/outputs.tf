output "cluster_name" {
  description = "Name of the EKS cluster: the environment stacks' cluster_name."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = module.eks.cluster_endpoint
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for this cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "oidc_provider_arn" {
  description = "IAM OIDC provider of the cluster, for IRSA."
  value       = module.eks.oidc_provider_arn
}

output "vpc_id" {
  description = "VPC of the cluster."
  value       = module.network.vpc_id
}

output "interface_endpoint_ids" {
  description = "Interface endpoints of the VPC, by service."
  value       = module.network.interface_endpoint_ids
}

output "nat_public_ips" {
  description = "Addresses the cluster's egress comes from."
  value       = module.network.nat_public_ips
}

output "repository_urls" {
  description = "Image repositories (when this stack creates them), for the charts' image.repository values."
  value       = var.create_repositories ? module.ecr[0].repository_urls : {}
}

output "cluster_security_group_id" {
  description = "The cluster security group (the API endpoint's and the nodes'): it admits the cluster's own members only; allow 443 in from a bastion's or runner's group to reach the API from inside the VPC."
  value       = module.eks.cluster_security_group_id
}
