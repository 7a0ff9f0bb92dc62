variable "cluster_name" {
  description = "Name of the EKS cluster (also prefixes IAM roles and node groups)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}$", var.cluster_name))
    error_message = "The cluster_name must be 2-39 lowercase letters, digits or dashes, starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.30"
}

variable "subnet_ids" {
  description = "Private subnets (at least two availability zones) for the control plane and the nodes."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "EKS needs subnets in at least two availability zones."
  }
}

variable "endpoint_public_access" {
  description = "Whether the Kubernetes API is reachable from the internet (restricted by public_access_cidrs)."
  type        = bool
  default     = false
}

variable "public_access_cidrs" {
  description = "CIDRs allowed to reach a public API endpoint."
  type        = list(string)
  default     = []
}

variable "system_node_group" {
  description = "CPU nodes for cluster services (KubeRay operator, Kueue, CoreDNS, autoscaler)."
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
  })
  default = {
    instance_types = ["m6i.xlarge"]
    min_size       = 2
    max_size       = 4
    desired_size   = 2
  }
}

variable "gpu_pools" {
  description = <<-EOT
    GPU node pools keyed by pool name. Each pool becomes an on-demand node group (the guaranteed base)
    and a spot node group (cheaper burst capacity); either may scale to zero (min 0). Nodes carry the
    labels nuro.ai/gpu-type and nuro.ai/capacity-type and the taint nvidia.com/gpu=<gpu_type>:NoSchedule,
    so only pods that ask for that GPU type land there.
  EOT
  type = map(object({
    gpu_type       = string
    instance_types = list(string)
    gpus_per_node  = number
    on_demand_min  = number
    on_demand_max  = number
    spot_min       = number
    spot_max       = number
    disk_size_gb   = number
  }))

  validation {
    condition = alltrue([
      for pool in values(var.gpu_pools) :
      pool.on_demand_min >= 0 && pool.spot_min >= 0 && pool.on_demand_max >= pool.on_demand_min && pool.spot_max >= pool.spot_min
    ])
    error_message = "Every gpu_pools entry needs 0 <= min <= max for both on-demand and spot."
  }
}

variable "team_quotas" {
  description = <<-EOT
    GPU quota per team and GPU type, e.g. { perception = { a100 = { gpus = 16, borrowing_limit = 8 } } }.
    Each team gets a Kueue ClusterQueue (all in one cohort, so idle quota can be borrowed up to
    borrowing_limit) and a LocalQueue in its own namespace.
  EOT
  type = map(map(object({
    gpus            = number
    borrowing_limit = number
  })))
}

variable "kuberay_operator_version" {
  description = "Version of the kuberay-operator Helm chart."
  type        = string
  default     = "1.2.2"
}

variable "kueue_version" {
  description = "Version of the Kueue Helm chart."
  type        = string
  default     = "0.9.1"
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}
