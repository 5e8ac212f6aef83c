// Command hydra builds the Ory Hydra OAuth 2.0 server at the version pinned in
// go.mod; the end-to-end tests and the demo run it on loopback as the upstream.
package main

import (
	"github.com/ory/hydra/v2/cmd"
)

func main() {
	cmd.Execute()
}
