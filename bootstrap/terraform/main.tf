locals {
  # Fields of config and roles that the configuration leaves null are dropped,
  # so every field Terraform writes is one it can compare on the next read.
  config_fields = { for name, value in var.upstream : name => value if value != null }

  role_fields = {
    for role_name, role in var.roles : role_name => {
      for name, value in role : name => value if value != null
    }
  }
}

resource "vault_plugin" "ci_tokens" {
  type    = "secret"
  name    = var.plugin.name
  command = var.plugin.command
  version = var.plugin.version
  sha256  = var.plugin.sha256
  args    = var.plugin.args
  env     = var.plugin.env
}

resource "vault_mount" "ci_tokens" {
  path           = var.mount_path
  type           = vault_plugin.ci_tokens.name
  plugin_version = vault_plugin.ci_tokens.version
  description    = var.mount.description

  default_lease_ttl_seconds = var.mount.default_lease_ttl_seconds
  max_lease_ttl_seconds     = var.mount.max_lease_ttl_seconds

  # Audit devices HMAC every response field by default. These three carry no
  # secret and let an operator trace a CI token from the audit log: token_id
  # is a fingerprint of the access token, never the token itself.
  audit_non_hmac_response_keys = ["token_id", "role", "expires_at"]
}

# The engine merges a config write into the stored config, so this resource
# never clears the client secret or the root grant, which are written outside
# Terraform. Reads return the written names and units (durations as whole
# seconds), and ignore_absent_fields skips what the engine adds on read (such
# as discovered endpoints), so a second apply finds no changes.
resource "vault_generic_endpoint" "config" {
  path                 = "${vault_mount.ci_tokens.path}/config"
  data_json            = jsonencode(local.config_fields)
  ignore_absent_fields = true
  disable_delete       = !var.delete_config_on_destroy
}

resource "vault_generic_endpoint" "role" {
  for_each = local.role_fields

  path                 = "${vault_mount.ci_tokens.path}/roles/${each.key}"
  data_json            = jsonencode(each.value)
  ignore_absent_fields = true
}
