# One policy per ci-tokens role. A pipeline's Vault token carries exactly one
# of them and no default policy, so it can mint tokens for that role and
# revoke itself (which revokes the CI tokens it minted), and nothing else.
resource "vault_policy" "role" {
  for_each = var.roles

  name   = "${replace(vault_mount.ci_tokens.path, "/", "-")}-${each.key}"
  policy = <<-EOT
    # Mint a CI token for the ${each.key} role.
    path "${vault_mount.ci_tokens.path}/creds/${each.key}" {
      capabilities = ["read", "update"]
    }

    # Revoke the job's own Vault token, and with it the CI token leases.
    path "auth/token/revoke-self" {
      capabilities = ["update"]
    }
  EOT
}
