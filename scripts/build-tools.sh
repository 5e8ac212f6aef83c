#!/usr/bin/env bash
# Builds the Vault and Hydra binaries that the demo, `make dev` and the
# end-to-end tests run, from the tools modules under scripts/tools, into
# ${CI_TOKENS_CACHE:-$HOME/.cache/ci-tokens}/bin/<tool>-<version>. A binary
# already in the cache is reused, so only the first run pays for the build
# (Vault: about 10 minutes and 4 GB of modules on 2 cores; Hydra: about a
# minute). The version comes from the tools module's go.mod.
#
# The Go package scripts/devstack applies the same rules, and both take the
# same lock file, so a build started here and one started by `go test` never
# overlap.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin_dir="${CI_TOKENS_CACHE:-$HOME/.cache/ci-tokens}/bin"
mkdir -p "$bin_dir"

# required_version MODULE GOMOD prints the version of MODULE that GOMOD
# requires, from a one-line require or a require block.
required_version() {
  awk -v module="$1" '
    $1 == "require" && $2 == module { print $3; exit }
    $1 == module { print $2; exit }
  ' "$2"
}

# build_tool NAME MODULE DIR TAGS NOTE builds DIR into the cache unless the
# binary for the required version of MODULE is already there.
build_tool() {
  local name=$1 module=$2 dir=$3 tags=$4 note=$5
  local version target

  version=$(required_version "$module" "$dir/go.mod")
  if [[ -z $version ]]; then
    echo "build-tools: $dir/go.mod does not require $module" >&2
    exit 1
  fi
  target="$bin_dir/$name-$version"
  if [[ -x $target ]]; then
    echo "$name $version: $target (cached)"
    return
  fi

  (
    # flock(1) is missing on macOS; there, concurrent builds are not
    # serialized but still cannot leave a broken binary behind.
    if command -v flock >/dev/null; then
      flock 9
    fi
    if [[ -x $target ]]; then
      exit 0
    fi
    echo "building $name $version into $target ($note)"
    # Build under a temporary name and rename, so that an interrupted
    # build never leaves a broken binary at the cached path.
    local tmp="$target.tmp-$$"
    trap 'rm -f "$tmp"' EXIT
    (cd "$dir" && GOWORK=off go build ${tags:+-tags "$tags"} -o "$tmp" .)
    mv "$tmp" "$target"
  ) 9>"$bin_dir/.$name.lock"
}

build_tool vault github.com/hashicorp/vault scripts/tools/vault "" \
  "the first build takes about 10 minutes"
# Hydra's SQLite driver needs cgo and these tags.
build_tool hydra github.com/ory/hydra/v2 scripts/tools/hydra \
  "sqlite,sqlite_omit_load_extension" "the first build takes about a minute"
