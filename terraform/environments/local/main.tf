locals {
  runtime_dir  = var.runtime_dir != "" ? var.runtime_dir : "/tmp/nuro-ml-ray-${var.ray_port}"
  ray_temp_dir = var.ray_temp_dir != "" ? var.ray_temp_dir : "${local.runtime_dir}/ray"
}

# One local Ray head. Every setting is a trigger, so changing any of them replaces (restarts) the
# head, and the destroy-time provisioner (which may only read `self`) finds what it needs here.
resource "null_resource" "ray_head" {
  triggers = {
    num_gpus               = var.num_gpus
    num_cpus               = var.num_cpus
    ray_port               = var.ray_port
    dashboard_port         = var.dashboard_port
    python                 = var.python
    script                 = abspath("${path.module}/scripts/ray_head.py")
    runtime_dir            = local.runtime_dir
    ray_temp_dir           = local.ray_temp_dir
    object_store_memory_mb = var.object_store_memory_mb
    stop_grace_seconds     = var.stop_grace_seconds
  }

  provisioner "local-exec" {
    interpreter = [self.triggers.python, self.triggers.script]
    command     = "start"
    environment = {
      RAY_HEAD_RUNTIME_DIR            = self.triggers.runtime_dir
      RAY_HEAD_TEMP_DIR               = self.triggers.ray_temp_dir
      RAY_HEAD_PORT                   = self.triggers.ray_port
      RAY_HEAD_DASHBOARD_PORT         = self.triggers.dashboard_port
      RAY_HEAD_NUM_GPUS               = self.triggers.num_gpus
      RAY_HEAD_NUM_CPUS               = self.triggers.num_cpus
      RAY_HEAD_OBJECT_STORE_MEMORY_MB = self.triggers.object_store_memory_mb
      RAY_HEAD_START_TIMEOUT          = var.start_timeout_seconds
    }
  }

  provisioner "local-exec" {
    when        = destroy
    interpreter = [self.triggers.python, self.triggers.script]
    command     = "stop"
    environment = {
      RAY_HEAD_RUNTIME_DIR = self.triggers.runtime_dir
      RAY_HEAD_STOP_GRACE  = self.triggers.stop_grace_seconds
    }
  }
}
