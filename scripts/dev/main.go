// Command dev starts the same stack as the demo, with the plugin mounted at
// ci-tokens/, configured against Hydra and the role deploy written, prints
// the environment to reach it and keeps it running until Ctrl-C or SIGTERM.
// When Hydra exits, Vault keeps running; when Vault exits, everything stops.
//
// Run it with `make dev` or `go run ./scripts/dev` from the repository root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

func main() {
	var opts devstack.Options
	flag.StringVar(&opts.Dir, "dir", "",
		"directory for the servers' files and logs, kept on exit (default: a temporary directory, removed on exit)")
	flag.BoolVar(&opts.PersistentVault, "persistent-vault", false,
		"run Vault with file storage, initialized and unsealed, instead of dev mode")
	flag.BoolVar(&opts.HydraSQLite, "hydra-sqlite", false,
		"keep Hydra's state in SQLite instead of memory")
	flag.DurationVar(&opts.AccessTokenTTL, "access-token-ttl", 0,
		"lifetime of Hydra's access tokens (default: Hydra's 1h)")
	flag.DurationVar(&opts.RotationGracePeriod, "rotation-grace-period", 0,
		"time during which Hydra still accepts a spent refresh token, such as 30s (default: 0, Hydra's default, no grace period)")
	flag.Parse()
	// The dev stack is throwaway, so a persistent Vault keeps its unseal key
	// and root token next to its storage and can be started again from -dir.
	opts.KeepVaultInitFile = opts.PersistentVault
	if err := checkGracePeriod(opts.RotationGracePeriod); err != nil {
		fmt.Fprintf(os.Stderr, "dev: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout, opts)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "dev: %v\n", err)
		os.Exit(1)
	}
}

// checkGracePeriod rejects negative values and fractions of a second,
// because devstack writes the grace period to Hydra in whole seconds.
func checkGracePeriod(d time.Duration) error {
	if d < 0 || d%time.Second != 0 {
		return fmt.Errorf("invalid -rotation-grace-period %s: use zero or a whole number of seconds, such as 30s", d)
	}
	return nil
}

func run(ctx context.Context, out io.Writer, opts devstack.Options) (err error) {
	opts.Logf = func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	stack, err := devstack.Up(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "\nStopping Vault and Hydra.")
		err = errors.Join(err, stack.Close())
	}()

	printEnvironment(out, stack)
	printSettings(out, opts)
	if stack.Vault.InitPath != "" {
		fmt.Fprintf(out, `
Vault init file:           %s
  It contains the unseal key and root token of this throwaway dev server,
  so that the same -dir can be started again. Never store a real server's
  unseal key and root token in a file like this.
`, stack.Vault.InitPath)
	}
	fmt.Fprintln(out, "\nPress Ctrl-C to stop both servers.")
	return waitForStop(ctx, out, stack)
}

func printEnvironment(out io.Writer, s *devstack.Stack) {
	fmt.Fprintf(out, `
Vault and Hydra are running, with %[1]s %[2]s mounted at %[3]s/.
In another shell:

  export VAULT_ADDR=%[4]s VAULT_TOKEN=%[5]s
  alias vault=%[6]s
  vault write -f %[3]s/creds/%[7]s

Hydra issuer (public API): %[8]s
Hydra admin API:           %[9]s
Engine's Hydra client:     %[10]s
Vault log:                 %[11]s
Hydra log:                 %[12]s
`,
		s.Plugin.Name, s.Plugin.Version, devstack.MountPath,
		s.Vault.Addr, s.Vault.Token, s.Vault.Binary, devstack.RoleName,
		s.Hydra.PublicURL, s.Hydra.AdminURL, s.EngineClient.ID,
		s.Vault.LogPath, s.Hydra.LogPath)
}

// printSettings prints the storage and token settings that the flags chose.
func printSettings(out io.Writer, opts devstack.Options) {
	vaultStorage, hydraStorage := "in memory (dev mode)", "in memory"
	if opts.PersistentVault {
		vaultStorage = "file storage"
	}
	if opts.HydraSQLite {
		hydraStorage = "SQLite"
	}
	accessTokenTTL := "1h (Hydra's default)"
	if opts.AccessTokenTTL > 0 {
		accessTokenTTL = opts.AccessTokenTTL.String()
	}
	gracePeriod := "0 (Hydra's default: a spent refresh token is rejected)"
	if opts.RotationGracePeriod > 0 {
		gracePeriod = opts.RotationGracePeriod.String()
	}
	fmt.Fprintf(out, `
Vault storage:             %s
Hydra storage:             %s
Access token TTL:          %s
Rotation grace period:     %s
`, vaultStorage, hydraStorage, accessTokenTTL, gracePeriod)
}

// waitForStop returns nil when ctx ends, or an error as soon as Vault exits
// on its own. When Hydra exits, it prints a warning once and keeps Vault
// running, so that the engine can be tried with its upstream down.
func waitForStop(ctx context.Context, out io.Writer, s *devstack.Stack) error {
	ticker := time.NewTicker(2 * time.Second)
	defer ticker.Stop()
	hydraWarned := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		if !s.Vault.Running() {
			return fmt.Errorf("vault exited; see %s", s.Vault.LogPath)
		}
		if !hydraWarned && !s.Hydra.Running() {
			printHydraExited(out, s)
			hydraWarned = true
		}
	}
}

// printHydraExited prints a warning that Hydra exited and how to start it again.
// Nothing restarts Hydra automatically.
func printHydraExited(out io.Writer, s *devstack.Stack) {
	fmt.Fprintf(out, "\nWARNING: hydra exited; see %s\n", s.Hydra.LogPath)
	fmt.Fprintln(out, "Vault keeps running, so the engine now works against an upstream that is down.")
	if !s.Hydra.Persistent() {
		fmt.Fprintln(out, "Hydra kept its state in memory, so its clients and grants are gone. Stop with Ctrl-C and")
		fmt.Fprintln(out, "run make dev again, or use -hydra-sqlite to keep Hydra's state across restarts.")
		return
	}
	hydraDir := filepath.Dir(s.Hydra.ConfigPath)
	fmt.Fprintln(out, "To start Hydra again on the same ports and database, run in another shell:")
	fmt.Fprintf(out, "\n  cd %s && %s serve all --dev --sqa-opt-out --config %s >>%s 2>&1\n\n",
		shellQuote(hydraDir), shellQuote(s.Tools.Hydra), shellQuote(s.Hydra.ConfigPath), shellQuote(s.Hydra.LogPath))
	fmt.Fprintln(out, "Ctrl-C here does not stop a Hydra started by hand.")
}

// shellQuote returns value as one word for a POSIX shell.
func shellQuote(value string) string {
	if value != "" && strings.Trim(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+:=,") == "" {
		return value
	}
	return "'" + strings.ReplaceAll(value, "'", `'\''`) + "'"
}
