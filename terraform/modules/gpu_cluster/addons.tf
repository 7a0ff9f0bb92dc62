resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = "https://ray-project.github.io/kuberay-helm/"
  chart            = "kuberay-operator"
  version          = var.kuberay_operator_version
  namespace        = "kuberay-system"
  create_namespace = true
  atomic           = true

  values = [yamlencode({
    nodeSelector = { "nuro.ai/node-role" = "system" }
    # Let Kueue admit RayJobs/RayClusters: the operator creates pods only once a job is admitted.
    batchScheduler = { enabled = false }
  })]

  depends_on = [aws_eks_node_group.system]
}

resource "helm_release" "kueue" {
  name             = "kueue"
  repository       = "oci://registry.k8s.io/kueue/charts"
  chart            = "kueue"
  version          = var.kueue_version
  namespace        = "kueue-system"
  create_namespace = true
  atomic           = true

  values = [yamlencode({
    controllerManager = {
      manager = { nodeSelector = { "nuro.ai/node-role" = "system" } }
    }
    managerConfig = {
      controllerManagerConfigYaml = yamlencode({
        apiVersion = "config.kueue.x-k8s.io/v1beta1"
        kind       = "Configuration"
        integrations = {
          frameworks = ["batch/job", "ray.io/rayjob", "ray.io/raycluster"]
        }
      })
    }
  })]

  depends_on = [aws_eks_node_group.system]
}

# Queues are rendered by a chart in this module rather than kubernetes_manifest resources, which
# would need Kueue's CRDs to exist already when the first plan is made.
resource "helm_release" "kueue_queues" {
  name      = "nuro-kueue-queues"
  chart     = "${path.module}/charts/kueue-queues"
  namespace = "kueue-system"
  atomic    = true

  values = [yamlencode({
    cohort = var.cluster_name
    flavors = [
      for gpu_type in local.gpu_types : {
        name        = gpu_type
        nodeLabels  = { "nuro.ai/gpu-type" = gpu_type }
        tolerations = [{ key = "nvidia.com/gpu", operator = "Equal", value = gpu_type, effect = "NoSchedule" }]
      }
    ]
    teams = [
      for team, quotas in var.team_quotas : {
        name = team
        flavors = [
          for gpu_type, quota in quotas : {
            name           = gpu_type
            gpus           = quota.gpus
            borrowingLimit = quota.borrowing_limit
          }
        ]
      }
    ]
  })]

  depends_on = [helm_release.kueue]
}
