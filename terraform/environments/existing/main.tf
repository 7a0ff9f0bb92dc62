# A Ray cluster that is already running (a deployed platform; an Airflow connection names it):
# nothing to create or destroy. The pipeline applies this environment instead of `local` so its
# provision/teardown pair keeps the same shape; the inputs of `local` are accepted and ignored.

terraform {
  required_version = ">= 1.0.0"

  # Partial configuration: the Terraform hook passes the state path with -backend-config.
  backend "local" {}
}

variable "num_gpus" {
  description = "Ignored: the running cluster's GPUs are read from the cluster itself."
  type        = number
  default     = 0
}

variable "ray_port" {
  description = "Ignored: the cluster's address comes from its Airflow connection."
  type        = number
  default     = 0
}

variable "dashboard_port" {
  description = "Ignored: the cluster's address comes from its Airflow connection."
  type        = number
  default     = 0
}

variable "python" {
  description = "Ignored: nothing is started."
  type        = string
  default     = ""
}

output "provisioned" {
  description = "Whether this environment started a cluster (never: it attaches to a running one)."
  value       = false
}

output "requested" {
  description = "What the pipeline asked for; the running cluster is used as it is, so this only records the request."
  value = {
    num_gpus       = var.num_gpus
    ray_port       = var.ray_port
    dashboard_port = var.dashboard_port
    python         = var.python
  }
}
