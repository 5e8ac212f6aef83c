# Vault Agent as a process supervisor: it logs in, mints a CI token for the
# "deploy" role, and starts the command with the token in its environment.
# When the token is renewed into a new one, the agent restarts the command.
#
#   vault agent -config=agent-exec.hcl
#
# Exec mode takes env_template blocks, not template blocks; each block sets
# one variable from its own template.

vault {
  address = "https://vault.example.com:8200"
}

auto_auth {
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
  exit_on_retry_failure = true
}

env_template "CI_TOKEN" {
  contents             = "{{ with secret \"ci-tokens/creds/deploy\" }}{{ .Data.access_token }}{{ end }}"
  error_on_missing_key = true
}

env_template "CI_TOKEN_EXPIRES_AT" {
  contents             = "{{ with secret \"ci-tokens/creds/deploy\" }}{{ .Data.expires_at }}{{ end }}"
  error_on_missing_key = true
}

exec {
  command                   = ["/usr/local/bin/deploy-worker"]
  restart_on_secret_changes = "always"
  restart_stop_signal       = "SIGTERM"
}
