resource "aws_iam_role" "node" {
  name_prefix = "${var.name}-node-"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })

  tags = var.tags
}

# Not AmazonEKS_CNI_Policy: the VPC CNI has its own role (main.tf), which pods on the
# host network cannot borrow.
resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryPullOnly",
  ])

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

resource "aws_launch_template" "node" {
  name_prefix = "${var.name}-node-"

  # IMDSv2 with a hop limit of 1: containers cannot reach the node's instance metadata, so
  # a pod never borrows the node role and must use its own IRSA role.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.node_disk_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  # The provider's default_tags do not reach what a launch template tags (the instances
  # and their disks), so they are added here: the nodes are most of the stack's cost.
  tag_specifications {
    resource_type = "instance"
    tags          = merge(data.aws_default_tags.current.tags, var.tags, { Name = "${var.name}-node" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(data.aws_default_tags.current.tags, var.tags, { Name = "${var.name}-node" })
  }

  tags = var.tags
}

resource "aws_eks_node_group" "this" {
  cluster_name = aws_eks_cluster.this.name
  # A prefix, so that a replacement can exist beside the group it replaces (see lifecycle).
  node_group_name_prefix = "${var.name}-default-"
  # Follows the control plane when kubernetes_version is raised.
  version        = aws_eks_cluster.this.version
  node_role_arn  = aws_iam_role.node.arn
  subnet_ids     = var.subnet_ids
  ami_type       = "AL2023_x86_64_STANDARD"
  capacity_type  = var.node_capacity_type
  instance_types = var.node_instance_types

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  scaling_config {
    min_size     = var.node_count.min
    desired_size = var.node_count.desired
    max_size     = var.node_count.max
  }

  # A new launch template or Kubernetes version replaces a third of the nodes at a time;
  # the API's PodDisruptionBudget and the Jobs' disruption rule decide what may move.
  update_config {
    max_unavailable_percentage = 33
  }

  tags = var.tags

  lifecycle {
    # A cluster autoscaler (or a person) owns the current size after creation.
    ignore_changes = [scaling_config[0].desired_size]
    # Other instance types, capacity type or zones replace the whole group: the new one
    # is made ready first, and EKS drains the old one's nodes as it deletes them.
    # Destroyed first, the cluster's only group would take every pod down with it.
    create_before_destroy = true
  }

  depends_on = [aws_iam_role_policy_attachment.node, aws_eks_addon.node]
}
