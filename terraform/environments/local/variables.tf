variable "num_gpus" {
  description = "Logical GPUs the Ray head advertises (no physical GPU is needed)."
  type        = number
  default     = 2

  validation {
    condition     = tonumber(var.num_gpus) >= 0 && floor(var.num_gpus) == tonumber(var.num_gpus)
    error_message = "The num_gpus value must be a whole number >= 0."
  }
}

variable "num_cpus" {
  description = "Logical CPUs the Ray head advertises."
  type        = number
  default     = 4

  validation {
    condition     = tonumber(var.num_cpus) >= 1 && floor(var.num_cpus) == tonumber(var.num_cpus)
    error_message = "The num_cpus value must be a whole number >= 1."
  }
}

variable "ray_port" {
  description = "GCS port of the Ray head; the cluster address is 127.0.0.1:<ray_port>."
  type        = number
  default     = 26379

  validation {
    condition     = tonumber(var.ray_port) > 0 && tonumber(var.ray_port) < 65536
    error_message = "The ray_port value must be a TCP port (1-65535)."
  }
}

variable "dashboard_port" {
  description = "Port of the Ray dashboard and Jobs API on 127.0.0.1."
  type        = number
  default     = 28265

  validation {
    condition     = tonumber(var.dashboard_port) > 0 && tonumber(var.dashboard_port) < 65536
    error_message = "The dashboard_port value must be a TCP port (1-65535)."
  }
}

variable "python" {
  description = "Interpreter whose Ray installation runs the head (pass the platform's virtualenv python)."
  type        = string
  default     = "python3"
}

variable "runtime_dir" {
  description = "Directory for the head's PID record and log; empty means /tmp/nuro-ml-ray-<ray_port>."
  type        = string
  default     = ""
}

variable "ray_temp_dir" {
  description = "Ray's --temp-dir (sockets live there, so keep it short); empty means <runtime_dir>/ray."
  type        = string
  default     = ""
}

variable "object_store_memory_mb" {
  description = "Size of the head's object store in MiB."
  type        = number
  default     = 512
}

variable "start_timeout_seconds" {
  description = "How long apply waits for the dashboard and Jobs API to answer before failing."
  type        = number
  default     = 180
}

variable "stop_grace_seconds" {
  description = "How long destroy waits after SIGTERM before it SIGKILLs what is left of the head's session."
  type        = number
  default     = 5
}
