#!/usr/bin/env bash
# Installs the ci-tokens plugin into a running Vault. It builds the plugin
# (or takes a binary) and copies it into Vault's plugin directory under a
# versioned file name. Then it registers the plugin in the catalog by SHA-256
# and version. Last, it mounts the plugin, or pins an existing mount to the
# new version and reloads it.
#
# The versioned file name keeps the binary of the running version in place,
# so its catalog entry stays valid until the mount has moved on.
set -euo pipefail

plugin=vault-plugin-secrets-ci-tokens
version_variable=github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend.Version

usage() {
  cat <<USAGE
Usage: $0 -d PLUGIN_DIR [-b BINARY] [-v VERSION] [-m MOUNT]

  -d PLUGIN_DIR  the server's plugin_directory (required), writable from here
  -b BINARY      a plugin binary built with the version stamped in; without
                 it, the plugin is built from this repository with go
  -v VERSION     the version to register and mount (default v0.1.0)
  -m MOUNT       the mount path (default ci-tokens)

VAULT_ADDR and VAULT_TOKEN (or a token from vault login) must reach the
server with permission on sys/plugins/catalog, sys/mounts and
sys/plugins/reload. The vault CLI is taken from PATH, or from VAULT_CLI.
USAGE
}

plugin_dir="" binary="" version=v0.1.0 mount=ci-tokens
while getopts "d:b:v:m:h" opt; do
  case $opt in
    d) plugin_dir=$OPTARG ;;
    b) binary=$OPTARG ;;
    v) version=$OPTARG ;;
    m) mount=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
if [[ -z $plugin_dir ]]; then
  echo "register-plugin: -d PLUGIN_DIR is required" >&2
  usage >&2
  exit 2
fi
if [[ ! -d $plugin_dir ]]; then
  echo "register-plugin: plugin directory $plugin_dir does not exist" >&2
  exit 1
fi
vault=${VAULT_CLI:-vault}

# Build the plugin unless a binary was given.
if [[ -z $binary ]]; then
  repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  build_dir="$(mktemp -d)"
  trap 'rm -rf "$build_dir"' EXIT
  binary="$build_dir/$plugin"
  echo "building $plugin $version"
  (cd "$repo_root" && go build -trimpath -ldflags "-X $version_variable=$version" \
    -o "$binary" "./cmd/$plugin")
fi

# Copy it into the plugin directory: first under a temporary name, so that
# Vault never runs a half-written file.
command_name="$plugin-$version"
target="$plugin_dir/$command_name"
cp "$binary" "$target.tmp"
chmod 0755 "$target.tmp"
mv "$target.tmp" "$target"
if command -v sha256sum >/dev/null; then
  sha256=$(sha256sum "$target" | cut -d ' ' -f 1)
else
  sha256=$(shasum -a 256 "$target" | cut -d ' ' -f 1)
fi
echo "installed $target"
echo "sha256 $sha256"

# Register it under its version.
"$vault" plugin register -sha256="$sha256" -version="$version" \
  -command="$command_name" secret "$plugin"

# Response keys that audit devices log in plain text instead of as HMACs.
# None of them is a secret, and token_id ties an audit entry to the token.
# The vault CLI takes one key per flag: "a,b" would be a single key.
audit_keys=(token_id role expires_at)
audit_flags=()
for key in "${audit_keys[@]}"; do
  audit_flags+=("-audit-non-hmac-response-keys=$key")
done

# Mount it, or pin the existing mount to this version and reload it.
if "$vault" read "sys/mounts/$mount" >/dev/null 2>&1; then
  "$vault" secrets tune -plugin-version="$version" "$mount"
  # `vault plugin reload -mounts=...` in Vault 1.21 sends the request to
  # sys/plugins/reload/unknown, which fails; this is the API it wraps.
  "$vault" write "sys/plugins/reload/backend" mounts="$mount"

  # The existing tuning stays as it is, but a mount without the audit keys
  # gets a hint. The field is a JSON array of strings, or absent.
  tuned_keys=$("$vault" read -format=json -field=audit_non_hmac_response_keys \
    "sys/mounts/$mount/tune" 2>/dev/null || true)
  missing=()
  for key in "${audit_keys[@]}"; do
    if [[ $tuned_keys != *"\"$key\""* ]]; then
      missing+=("$key")
    fi
  done
  if ((${#missing[@]} > 0)); then
    echo "hint: audit logs show ${missing[*]} of $mount/ responses only as HMACs."
    echo "  To log token_id, role and expires_at in plain text, run (this replaces the mount's list):"
    echo "  vault secrets tune ${audit_flags[*]} $mount"
  fi
else
  "$vault" secrets enable -path="$mount" -plugin-version="$version" \
    "${audit_flags[@]}" "$plugin"
fi

echo "$mount/ runs version $("$vault" read -field=running_plugin_version "sys/mounts/$mount")"
