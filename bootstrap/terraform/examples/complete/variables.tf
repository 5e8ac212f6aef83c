variable "mount_path" {
  description = "Path of the ci-tokens mount."
  type        = string
  default     = "ci-tokens"
}

variable "plugin_version" {
  description = "Version compiled into the plugin binary, such as v0.1.0."
  type        = string
}

variable "plugin_sha256" {
  description = "Hex SHA-256 of the plugin binary in Vault's plugin_directory."
  type        = string
}

variable "issuer" {
  description = "Issuer URL of the upstream OAuth 2.0 server."
  type        = string
}

variable "client_id" {
  description = "Client ID of the engine at the upstream."
  type        = string
}

variable "ca_pem" {
  description = "PEM bundle for the upstream's TLS certificate, or null for the system roots."
  type        = string
  default     = null
}

variable "github_repository" {
  description = "owner/name of the GitHub repository whose main branch may mint deploy tokens, or null to skip GitHub Actions."
  type        = string
  default     = null
}

variable "github_oidc_discovery_url" {
  description = "Discovery URL for GitHub's ID tokens; null uses the issuer."
  type        = string
  default     = null
}

variable "gitlab_project_path" {
  description = "group/project of the GitLab project whose main branch may mint read-artifacts tokens, or null to skip GitLab CI."
  type        = string
  default     = null
}

variable "gitlab_issuer" {
  description = "GitLab instance URL: https://gitlab.com or a self-managed instance."
  type        = string
  default     = "https://gitlab.com"
}

variable "gitlab_oidc_discovery_url" {
  description = "Discovery URL for GitLab's ID tokens; null uses the issuer."
  type        = string
  default     = null
}
