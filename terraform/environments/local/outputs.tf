output "ray_address" {
  description = "Ray cluster (GCS) address for ray.init and job clients."
  value       = "127.0.0.1:${null_resource.ray_head.triggers.ray_port}"
}

output "dashboard_url" {
  description = "Ray dashboard and Jobs API base URL."
  value       = "http://127.0.0.1:${null_resource.ray_head.triggers.dashboard_port}"
}

output "gpu_count" {
  description = "Logical GPUs the head advertises."
  value       = tonumber(null_resource.ray_head.triggers.num_gpus)
}

output "cpu_count" {
  description = "Logical CPUs the head advertises."
  value       = tonumber(null_resource.ray_head.triggers.num_cpus)
}

output "ray_temp_dir" {
  description = "Ray's temp dir (session logs of the head and its workers)."
  value       = null_resource.ray_head.triggers.ray_temp_dir
}

output "runtime_dir" {
  description = "Directory with the head's PID record and ray-head.log."
  value       = null_resource.ray_head.triggers.runtime_dir
}

output "head_id" {
  description = "Terraform id of the Ray head resource; it changes whenever the head is replaced."
  value       = null_resource.ray_head.id
}
