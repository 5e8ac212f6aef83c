variable "mount_path" {
  description = "Path at which the ci-tokens engine is mounted."
  type        = string
  default     = "ci-tokens"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$", var.mount_path))
    error_message = "The mount_path must be a relative Vault path without leading or trailing slashes."
  }
}

variable "plugin" {
  description = <<-EOT
    Plugin binary to register in Vault's plugin catalog. The command is relative
    to the server's plugin_directory; sha256 is the hex SHA-256 of that file and
    version the semantic version compiled into it (for example v0.1.0).
  EOT
  type = object({
    name    = optional(string, "vault-plugin-secrets-ci-tokens")
    command = optional(string, "vault-plugin-secrets-ci-tokens")
    version = string
    sha256  = string
    args    = optional(list(string), [])
    env     = optional(list(string), [])
  })

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.plugin.sha256))
    error_message = "The plugin.sha256 must be 64 lowercase hex digits, as printed by sha256sum."
  }

  validation {
    condition     = can(regex("^v[0-9]+\\.[0-9]+\\.[0-9]+", var.plugin.version))
    error_message = "The plugin.version must be a semantic version with a leading v, such as v0.1.0."
  }
}

variable "mount" {
  description = "Mount settings. Lease TTLs are in seconds; null keeps Vault's system defaults."
  type = object({
    description               = optional(string, "CI tokens from the upstream OAuth 2.0 server")
    default_lease_ttl_seconds = optional(number)
    max_lease_ttl_seconds     = optional(number)
  })
  default = {}
}

variable "upstream" {
  description = <<-EOT
    Non-secret fields of <mount>/config, with the names and units the engine
    accepts. Durations are whole seconds. A null field is not written, so the
    engine keeps its default and Terraform does not compare it. The client
    secret and the root refresh token are not inputs of this module: see the
    README for how they reach Vault without passing through Terraform state.
  EOT
  type = object({
    issuer                        = optional(string)
    token_endpoint                = optional(string)
    revocation_endpoint           = optional(string)
    authorization_endpoint        = optional(string)
    device_authorization_endpoint = optional(string)
    client_id                     = string
    client_auth_method            = optional(string)
    ca_pem                        = optional(string)
    tls_min_version               = optional(string)
    request_timeout               = optional(number)
    default_expires_in            = optional(number)
    rotation_period               = optional(number)
    rotation_schedule             = optional(string)
    rotation_window               = optional(number)
    disable_automated_rotation    = optional(bool)
  })

  validation {
    condition     = var.upstream.issuer != null || var.upstream.token_endpoint != null
    error_message = "Set upstream.issuer (for discovery) or upstream.token_endpoint."
  }

  validation {
    condition     = !(var.upstream.rotation_period != null && var.upstream.rotation_schedule != null)
    error_message = "The upstream.rotation_period and upstream.rotation_schedule are mutually exclusive; set one."
  }

  validation {
    condition = alltrue([
      for value in [
        var.upstream.request_timeout,
        var.upstream.default_expires_in,
        var.upstream.rotation_period,
        var.upstream.rotation_window,
      ] : value == null ? true : (value >= 0 && floor(value) == value)
    ])
    error_message = "The upstream durations must be whole, non-negative numbers of seconds."
  }

  validation {
    condition = alltrue([
      for value in [var.upstream.client_auth_method] : value == null ? true : contains(["client_secret_basic", "client_secret_post"], value)
    ])
    error_message = "The upstream.client_auth_method must be client_secret_basic or client_secret_post."
  }

  validation {
    condition = alltrue([
      for value in [var.upstream.tls_min_version] : value == null ? true : contains(["tls12", "tls13"], value)
    ])
    error_message = "The upstream.tls_min_version must be tls12 or tls13."
  }
}

variable "roles" {
  description = <<-EOT
    CI token roles by name, written to <mount>/roles/<name>. ttl and max_ttl
    are whole seconds (0 means the mount default or maximum). A null field is
    not written, so the engine keeps its default.
  EOT
  type = map(object({
    strategy = optional(string)
    scopes   = optional(list(string))
    audience = optional(list(string))
    ttl      = optional(number)
    max_ttl  = optional(number)
  }))
  default = {}

  validation {
    condition     = alltrue([for name in keys(var.roles) : can(regex("^[A-Za-z0-9][A-Za-z0-9_-]*$", name))])
    error_message = "Role names may contain only letters, digits, '_' and '-', and must start with a letter or digit."
  }

  validation {
    condition = alltrue(flatten([
      for role in values(var.roles) : [
        for value in [role.ttl, role.max_ttl] : value == null ? true : (value >= 0 && floor(value) == value)
      ]
    ]))
    error_message = "Role ttl and max_ttl must be whole, non-negative numbers of seconds."
  }

  validation {
    condition = alltrue([
      for role in values(var.roles) : role.strategy == null ? true : contains(["client_credentials", "refresh"], role.strategy)
    ])
    error_message = "Role strategy must be client_credentials or refresh."
  }
}

variable "delete_config_on_destroy" {
  description = <<-EOT
    Whether terraform destroy deletes <mount>/config. The engine rejects that
    delete while it holds a root grant, so the default false leaves config (and
    the grant) in place; disabling the mount still removes everything.
  EOT
  type        = bool
  default     = false
}

variable "github_actions" {
  description = <<-EOT
    JWT auth for GitHub Actions, or null to skip it. Each binding lets the
    workflows of one repository on one ref log in and use exactly one ci-tokens
    role. ref is the full Git ref (refs/heads/main, refs/tags/v1.2.3);
    environment, when set, also binds the job's deployment environment.
    audience must equal the audience the workflow requests for its ID token.
  EOT
  type = object({
    path               = optional(string, "jwt-github")
    issuer             = optional(string, "https://token.actions.githubusercontent.com")
    oidc_discovery_url = optional(string)
    audience           = optional(string, "vault")
    token_ttl          = optional(number, 900)
    token_max_ttl      = optional(number, 3600)
    bindings = map(object({
      repository  = string
      ref         = string
      role        = string
      environment = optional(string)
    }))
  })
  default = null
}

variable "gitlab_ci" {
  description = <<-EOT
    JWT auth for GitLab CI/CD, or null to skip it. issuer is https://gitlab.com
    or the URL of a self-managed instance. Each binding lets the pipelines of
    one project on one ref log in and use exactly one ci-tokens role. ref is a
    branch or tag name as GitLab puts it in the ID token (main, not
    refs/heads/main); ref_type is branch or tag; protected_only also requires
    the ref to be protected. audience must equal the aud of the job's id_tokens.
  EOT
  type = object({
    path               = optional(string, "jwt-gitlab")
    issuer             = optional(string, "https://gitlab.com")
    oidc_discovery_url = optional(string)
    audience           = optional(string, "vault")
    token_ttl          = optional(number, 900)
    token_max_ttl      = optional(number, 3600)
    bindings = map(object({
      project_path   = string
      ref            = string
      ref_type       = optional(string, "branch")
      protected_only = optional(bool, true)
      role           = string
    }))
  })
  default = null

  validation {
    condition = var.gitlab_ci == null ? true : alltrue([
      for binding in values(var.gitlab_ci.bindings) : contains(["branch", "tag"], binding.ref_type)
    ])
    error_message = "A gitlab_ci binding's ref_type must be branch or tag."
  }
}
