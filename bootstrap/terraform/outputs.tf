output "mount_path" {
  description = "Path of the ci-tokens mount."
  value       = vault_mount.ci_tokens.path
}

output "mount_accessor" {
  description = "Accessor of the ci-tokens mount."
  value       = vault_mount.ci_tokens.accessor
}

output "plugin_version" {
  description = "Plugin version the mount runs."
  value       = vault_mount.ci_tokens.plugin_version
}

output "policies" {
  description = "Name of the policy for each ci-tokens role; give exactly one to a pipeline or runner."
  value       = { for role_name, policy in vault_policy.role : role_name => policy.name }
}

output "creds_paths" {
  description = "Path to mint a CI token from, by role."
  value       = { for role_name in keys(var.roles) : role_name => "${vault_mount.ci_tokens.path}/creds/${role_name}" }
}

output "github_actions_auth_path" {
  description = "Path of the GitHub Actions JWT auth method, or null when it is not enabled."
  value       = var.github_actions == null ? null : vault_jwt_auth_backend.github[0].path
}

output "gitlab_ci_auth_path" {
  description = "Path of the GitLab CI JWT auth method, or null when it is not enabled."
  value       = var.gitlab_ci == null ? null : vault_jwt_auth_backend.gitlab[0].path
}
