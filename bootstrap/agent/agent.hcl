# Vault Agent on a CI runner: logs in with AppRole and keeps a CI token for
# the "deploy" role rendered into one file that only the agent's user can read.
#
#   vault agent -config=agent.hcl
#
# The runner's jobs source /run/ci-tokens/deploy.env, or read it, before
# they call the upstream API.

vault {
  address = "https://vault.example.com:8200"
}

auto_auth {
  # AppRole: the role ID is not secret, the secret ID is. Deliver the secret
  # ID with your provisioning tool and keep both files at mode 0600. On a
  # runner with a platform identity, "jwt", "kubernetes", "aws" or "gcp"
  # replaces this method; with "jwt", config = { path = "<file with the JWT>",
  # role = "<JWT auth role>" }.
  method "approle" {
    mount_path = "auth/approle"
    config = {
      role_id_file_path                   = "/etc/vault-agent/role-id"
      secret_id_file_path                 = "/etc/vault-agent/secret-id"
      remove_secret_id_file_after_reading = false
    }
  }
}

template_config {
  # Stop the agent instead of serving a stale token when Vault keeps failing,
  # so the runner's supervisor notices.
  exit_on_retry_failure = true
}

# One template with one "secret" call: every line comes from the same lease,
# so the token, its expiry and its fingerprint always belong together. A
# second template that reads the same path would mint a second token.
template {
  destination = "/run/ci-tokens/deploy.env"
  perms       = "0600"
  # Vault Agent reads HCL 1, where "<<-" strips only as much indentation
  # as the closing EOT line has, so the lines start at that column.
  contents = <<-EOT
  {{- with secret "ci-tokens/creds/deploy" -}}
  CI_TOKEN={{ .Data.access_token }}
  CI_TOKEN_EXPIRES_AT={{ .Data.expires_at }}
  CI_TOKEN_ID={{ .Data.token_id }}
  {{ end -}}
  EOT
}
