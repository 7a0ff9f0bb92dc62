variable "region" {
  description = "AWS region of the cluster."
  type        = string
  default     = "us-west-2"
}

variable "cluster_name" {
  description = "EKS cluster name."
  type        = string
  default     = "nuro-ml-gpu"
}

variable "vpc_id" {
  description = "VPC whose private subnets (tagged kubernetes.io/role/internal-elb=1) host the cluster."
  type        = string
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.30"
}

variable "gpu_pools" {
  description = "GPU node pools (see the gpu_cluster module)."
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
  default = {
    a100 = {
      gpu_type       = "a100"
      instance_types = ["p4d.24xlarge"]
      gpus_per_node  = 8
      on_demand_min  = 0
      on_demand_max  = 2
      spot_min       = 0
      spot_max       = 4
      disk_size_gb   = 500
    }
    l4 = {
      gpu_type       = "l4"
      instance_types = ["g6.12xlarge", "g6.24xlarge"]
      gpus_per_node  = 4
      on_demand_min  = 1
      on_demand_max  = 4
      spot_min       = 0
      spot_max       = 16
      disk_size_gb   = 200
    }
  }
}

variable "team_quotas" {
  description = "GPU quota per team and GPU type (one Kueue ClusterQueue per team)."
  type = map(map(object({
    gpus            = number
    borrowing_limit = number
  })))
  default = {
    perception = {
      a100 = { gpus = 16, borrowing_limit = 8 }
      l4   = { gpus = 16, borrowing_limit = 16 }
    }
    planning = {
      a100 = { gpus = 8, borrowing_limit = 8 }
      l4   = { gpus = 24, borrowing_limit = 8 }
    }
    simulation = {
      l4 = { gpus = 32, borrowing_limit = 32 }
    }
  }
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default = {
    project = "nuro-ml-platform"
  }
}
