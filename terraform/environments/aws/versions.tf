terraform {
  required_version = ">= 1.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.40"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.12"
    }
  }

  # Partial configuration: shared state with locking in PostgreSQL. The Terraform hook passes
  # conn_str from an Airflow connection (backend_conn_id) and schema_name per environment.
  backend "pg" {}
}
