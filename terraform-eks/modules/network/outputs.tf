output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets, one per zone: nodes, pods and the database live here."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets, one per zone: internet-facing load balancers and NAT gateways only."
  value       = aws_subnet.public[*].id
}

output "nat_public_ips" {
  description = "Egress addresses of the NAT gateways, for allow-lists elsewhere."
  value       = aws_eip.nat[*].public_ip
}

output "interface_endpoint_ids" {
  description = "IDs of the interface endpoints, by service (\"sts\": ...)."
  value       = { for service, endpoint in aws_vpc_endpoint.interface : service => endpoint.id }
}
