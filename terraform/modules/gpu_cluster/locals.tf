locals {
  # One managed node group per (pool, capacity type): EKS node groups have a single capacity type,
  # so the on-demand/spot mix of a pool is two groups scaled independently.
  gpu_node_groups = merge([
    for pool_name, pool in var.gpu_pools : {
      "${pool_name}-on-demand" = {
        pool           = pool_name
        gpu_type       = pool.gpu_type
        instance_types = pool.instance_types
        gpus_per_node  = pool.gpus_per_node
        capacity_type  = "ON_DEMAND"
        min_size       = pool.on_demand_min
        max_size       = pool.on_demand_max
        disk_size_gb   = pool.disk_size_gb
      }
      "${pool_name}-spot" = {
        pool           = pool_name
        gpu_type       = pool.gpu_type
        instance_types = pool.instance_types
        gpus_per_node  = pool.gpus_per_node
        capacity_type  = "SPOT"
        min_size       = pool.spot_min
        max_size       = pool.spot_max
        disk_size_gb   = pool.disk_size_gb
      }
    }
  ]...)

  gpu_types = distinct([for pool in values(var.gpu_pools) : pool.gpu_type])

  # Cluster Autoscaler can only scale a group up from zero nodes if the group's Auto Scaling group
  # advertises what a node would have (GPU count, labels, taints) as node-template tags.
  node_template_tags = merge([
    for group_name, group in local.gpu_node_groups : {
      "${group_name}|gpu" = {
        group = group_name
        key   = "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu"
        value = tostring(group.gpus_per_node)
      }
      "${group_name}|gpu-type" = {
        group = group_name
        key   = "k8s.io/cluster-autoscaler/node-template/label/nuro.ai/gpu-type"
        value = group.gpu_type
      }
      "${group_name}|capacity-type" = {
        group = group_name
        key   = "k8s.io/cluster-autoscaler/node-template/label/nuro.ai/capacity-type"
        value = lower(replace(group.capacity_type, "_", "-"))
      }
      "${group_name}|taint" = {
        group = group_name
        key   = "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"
        value = "${group.gpu_type}:NoSchedule"
      }
    }
  ]...)

  common_tags = merge(var.tags, {
    "nuro.ai/cluster" = var.cluster_name
    "managed-by"      = "terraform"
  })
}
