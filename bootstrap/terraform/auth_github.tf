resource "vault_jwt_auth_backend" "github" {
  count = var.github_actions == null ? 0 : 1

  path               = var.github_actions.path
  type               = "jwt"
  description        = "GitHub Actions OIDC ID tokens"
  bound_issuer       = var.github_actions.issuer
  oidc_discovery_url = coalesce(var.github_actions.oidc_discovery_url, var.github_actions.issuer)
}

resource "vault_jwt_auth_backend_role" "github" {
  for_each = var.github_actions == null ? {} : var.github_actions.bindings

  backend         = vault_jwt_auth_backend.github[0].path
  role_name       = each.key
  role_type       = "jwt"
  user_claim      = "sub"
  bound_audiences = [var.github_actions.audience]

  # GitHub puts the owner/name of the repository in "repository" and the full
  # Git ref in "ref"; "environment" is present only for jobs that name one.
  bound_claims_type = "string"
  bound_claims = merge(
    {
      repository = each.value.repository
      ref        = each.value.ref
    },
    each.value.environment == null ? {} : { environment = each.value.environment },
  )

  token_policies          = [vault_policy.role[each.value.role].name]
  token_no_default_policy = true
  token_ttl               = var.github_actions.token_ttl
  token_max_ttl           = var.github_actions.token_max_ttl
  # Only service tokens own their leases: revoking a service token revokes
  # the CI tokens it minted, which is what the job's last step relies on.
  token_type = "service"

  lifecycle {
    precondition {
      condition     = contains(keys(var.roles), each.value.role)
      error_message = "GitHub Actions binding ${each.key} names role ${each.value.role}, which is not in var.roles."
    }
  }
}
