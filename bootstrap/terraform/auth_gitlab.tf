resource "vault_jwt_auth_backend" "gitlab" {
  count = var.gitlab_ci == null ? 0 : 1

  path               = var.gitlab_ci.path
  type               = "jwt"
  description        = "GitLab CI/CD ID tokens"
  bound_issuer       = var.gitlab_ci.issuer
  oidc_discovery_url = coalesce(var.gitlab_ci.oidc_discovery_url, var.gitlab_ci.issuer)
}

resource "vault_jwt_auth_backend_role" "gitlab" {
  for_each = var.gitlab_ci == null ? {} : var.gitlab_ci.bindings

  backend         = vault_jwt_auth_backend.gitlab[0].path
  role_name       = each.key
  role_type       = "jwt"
  user_claim      = "sub"
  bound_audiences = [var.gitlab_ci.audience]

  # GitLab ID tokens carry claim values as strings, including
  # ref_protected ("true" or "false").
  bound_claims_type = "string"
  bound_claims = merge(
    {
      project_path = each.value.project_path
      ref          = each.value.ref
      ref_type     = each.value.ref_type
    },
    each.value.protected_only ? { ref_protected = "true" } : {},
  )

  token_policies          = [vault_policy.role[each.value.role].name]
  token_no_default_policy = true
  token_ttl               = var.gitlab_ci.token_ttl
  token_max_ttl           = var.gitlab_ci.token_max_ttl
  # Only service tokens own their leases: revoking a service token revokes
  # the CI tokens it minted, which is what the job's last step relies on.
  token_type = "service"

  lifecycle {
    precondition {
      condition     = contains(keys(var.roles), each.value.role)
      error_message = "GitLab CI binding ${each.key} names role ${each.value.role}, which is not in var.roles."
    }
  }
}
