terraform {
  required_version = ">= 1.0.0"

  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }

  # Partial configuration: the state path is passed with -backend-config so that state lives
  # outside the source tree (the Terraform hook points it at the platform's data directory).
  backend "local" {}
}
