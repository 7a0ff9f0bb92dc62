resource "aws_eks_cluster" "this" {
  name     = var.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = var.endpoint_public_access
    public_access_cidrs     = var.endpoint_public_access ? var.public_access_cidrs : null
  }

  enabled_cluster_log_types = ["api", "audit", "authenticator"]
  tags                      = local.common_tags

  depends_on = [aws_iam_role_policy_attachment.cluster]
}

resource "aws_eks_node_group" "system" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.cluster_name}-system"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  instance_types  = var.system_node_group.instance_types
  capacity_type   = "ON_DEMAND"

  scaling_config {
    min_size     = var.system_node_group.min_size
    max_size     = var.system_node_group.max_size
    desired_size = var.system_node_group.desired_size
  }

  labels = {
    "nuro.ai/node-role" = "system"
  }

  tags = local.common_tags

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_eks_node_group" "gpu" {
  for_each = local.gpu_node_groups

  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.cluster_name}-${each.key}"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  instance_types  = each.value.instance_types
  capacity_type   = each.value.capacity_type
  ami_type        = "AL2_x86_64_GPU"
  disk_size       = each.value.disk_size_gb

  scaling_config {
    min_size = each.value.min_size
    max_size = max(each.value.max_size, 1)
    # Groups start at their minimum (zero for scale-to-zero pools); the autoscaler owns the rest.
    desired_size = each.value.min_size
  }

  labels = {
    "nuro.ai/gpu-pool"      = each.value.pool
    "nuro.ai/gpu-type"      = each.value.gpu_type
    "nuro.ai/capacity-type" = lower(replace(each.value.capacity_type, "_", "-"))
    "nvidia.com/gpu.count"  = tostring(each.value.gpus_per_node)
  }

  taint {
    key    = "nvidia.com/gpu"
    value  = each.value.gpu_type
    effect = "NO_SCHEDULE"
  }

  dynamic "taint" {
    for_each = each.value.capacity_type == "SPOT" ? [1] : []
    content {
      key    = "nuro.ai/spot"
      value  = "true"
      effect = "PREFER_NO_SCHEDULE"
    }
  }

  tags = merge(local.common_tags, {
    "k8s.io/cluster-autoscaler/enabled"             = "true"
    "k8s.io/cluster-autoscaler/${var.cluster_name}" = "owned"
  })

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

resource "aws_autoscaling_group_tag" "gpu_node_template" {
  for_each = local.node_template_tags

  autoscaling_group_name = aws_eks_node_group.gpu[each.value.group].resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.value.key
    value               = each.value.value
    propagate_at_launch = false
  }
}
