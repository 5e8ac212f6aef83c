// Package devstack starts the real servers on 127.0.0.1 that the demo, the
// dev command, the end-to-end tests and the benchmark run against. They are a
// Vault server with the ci-tokens plugin registered and mounted, and an Ory
// Hydra OAuth 2.0 server as the upstream.
//
// The Vault and Hydra binaries are built once from the tools modules under
// scripts/tools and cached in ${CI_TOKENS_CACHE:-$HOME/.cache/ci-tokens}/bin,
// keyed by the version pinned in each tools module's go.mod. The plugin is
// built fresh from the working tree on every start.
//
// Every process started here runs in its own process group. Close ends the
// group, and on Linux the kernel sends SIGKILL to a server when the program
// that started it dies, so an interrupted test leaves nothing behind. The
// package runs on Linux and other Unix systems.
package devstack
