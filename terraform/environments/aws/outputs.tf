output "cluster_name" {
  description = "EKS cluster name."
  value       = module.gpu_cluster.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint (KubeRay hook connection host)."
  value       = module.gpu_cluster.cluster_endpoint
}

output "gpu_node_groups" {
  description = "GPU node groups with their GPU type, capacity type and scaling bounds."
  value       = module.gpu_cluster.gpu_node_groups
}

output "kueue_cluster_queues" {
  description = "Per-team Kueue ClusterQueues and their GPU quotas."
  value       = module.gpu_cluster.kueue_cluster_queues
}

output "kueue_local_queues" {
  description = "namespace/name of each team's LocalQueue."
  value       = module.gpu_cluster.kueue_local_queues
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = module.gpu_cluster.kubeconfig_command
}
