output "policies" {
  description = "Policy name for each ci-tokens role."
  value       = module.ci_tokens.policies
}

output "creds_paths" {
  description = "Path to mint a CI token from, by role."
  value       = module.ci_tokens.creds_paths
}
