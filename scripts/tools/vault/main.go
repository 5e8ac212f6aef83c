// Command vault builds the Vault server, CLI and Agent at the version pinned in
// go.mod, so that the end-to-end tests and the demo run a real Vault without
// its dependency graph entering the plugin's module.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
