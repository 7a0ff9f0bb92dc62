provider "aws" {
  region = var.region

  default_tags {
    tags = var.tags
  }
}

data "aws_subnets" "private" {
  filter {
    name   = "vpc-id"
    values = [var.vpc_id]
  }

  tags = {
    "kubernetes.io/role/internal-elb" = "1"
  }
}

module "gpu_cluster" {
  source = "../../modules/gpu_cluster"

  cluster_name       = var.cluster_name
  kubernetes_version = var.kubernetes_version
  subnet_ids         = data.aws_subnets.private.ids
  gpu_pools          = var.gpu_pools
  team_quotas        = var.team_quotas
  tags               = var.tags
}

# The Helm provider talks to the cluster the module creates, authenticating with short-lived EKS
# tokens from the AWS CLI rather than a stored kubeconfig.
provider "helm" {
  kubernetes {
    host                   = module.gpu_cluster.cluster_endpoint
    cluster_ca_certificate = base64decode(module.gpu_cluster.cluster_certificate_authority_data)

    exec {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--cluster-name", module.gpu_cluster.cluster_name, "--region", var.region]
    }
  }
}
