terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
  backend "local" {}
}

variable "trigger" {
  type = string
}

# A new trigger value forces Terraform to replace (destroy, then create) the resource.
resource "null_resource" "gate" {
  triggers = {
    trigger = var.trigger
  }
}

output "gate_id" {
  value = null_resource.gate.id
}
