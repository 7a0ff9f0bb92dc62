output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the API server."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_security_group_id" {
  description = "Security group EKS created for the control plane and nodes."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "node_role_arn" {
  description = "IAM role of every node group."
  value       = aws_iam_role.node.arn
}

output "gpu_node_groups" {
  description = "GPU node groups: name -> GPU type, capacity type and scaling bounds."
  value = {
    for name, group in aws_eks_node_group.gpu : name => {
      node_group_name = group.node_group_name
      gpu_type        = local.gpu_node_groups[name].gpu_type
      capacity_type   = group.capacity_type
      min_size        = group.scaling_config[0].min_size
      max_size        = group.scaling_config[0].max_size
    }
  }
}

output "kueue_cluster_queues" {
  description = "Kueue ClusterQueue per team (the team name), with its GPU quota per GPU type."
  value       = { for team, quotas in var.team_quotas : team => { for gpu_type, quota in quotas : gpu_type => quota.gpus } }
}

output "kueue_local_queues" {
  description = "namespace/name of each team's LocalQueue (label RayJobs with kueue.x-k8s.io/queue-name)."
  value       = [for team in keys(var.team_quotas) : "${team}/${team}"]
}

output "kuberay_namespace" {
  description = "Namespace of the KubeRay operator."
  value       = helm_release.kuberay_operator.namespace
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for this cluster."
  value       = "aws eks update-kubeconfig --name ${aws_eks_cluster.this.name}"
}
