# Example root: one engine mount, two roles, GitHub Actions and GitLab CI
# pipelines bound to one role each. The provider reads VAULT_ADDR and
# VAULT_TOKEN from the environment.
terraform {
  required_version = ">= 1.3"

  required_providers {
    vault = {
      source  = "hashicorp/vault"
      version = ">= 5.0, < 6.0"
    }
  }
}

provider "vault" {}

module "ci_tokens" {
  source = "../.."

  mount_path = var.mount_path

  plugin = {
    version = var.plugin_version
    sha256  = var.plugin_sha256
  }

  mount = {
    default_lease_ttl_seconds = 900
    max_lease_ttl_seconds     = 3600
  }

  upstream = {
    issuer          = var.issuer
    client_id       = var.client_id
    ca_pem          = var.ca_pem
    rotation_period = 86400
  }

  roles = {
    deploy = {
      scopes  = ["deploy"]
      ttl     = 600
      max_ttl = 900
    }
    read-artifacts = {
      scopes = ["artifacts:read"]
      ttl    = 300
    }
  }

  github_actions = var.github_repository == null ? null : {
    oidc_discovery_url = var.github_oidc_discovery_url
    bindings = {
      deploy-main = {
        repository = var.github_repository
        ref        = "refs/heads/main"
        role       = "deploy"
      }
    }
  }

  gitlab_ci = var.gitlab_project_path == null ? null : {
    issuer             = var.gitlab_issuer
    oidc_discovery_url = var.gitlab_oidc_discovery_url
    bindings = {
      artifacts-main = {
        project_path = var.gitlab_project_path
        ref          = "main"
        role         = "read-artifacts"
      }
    }
  }
}
