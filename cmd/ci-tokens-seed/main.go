// Command ci-tokens-seed seeds the root grant of a ci-tokens mount.
//
// The operator approves access at the upstream authorization server. The
// command passes only the resulting authorization code (or device code) to
// the engine's seed endpoint. The engine redeems it with its own client
// credentials and keeps the refresh token, so the refresh token never reaches
// this process, the shell or a file.
//
// Usage:
//
//	VAULT_ADDR=https://vault.example.com VAULT_TOKEN=... ci-tokens-seed [flags]
//
// By default the command runs the authorization code flow with PKCE (RFC 7636)
// and a loopback redirect (RFC 8252): it prints a URL to open in a browser and
// waits for the redirect on http://127.0.0.1:<port>/callback. With -flow=device
// it runs the device authorization grant (RFC 8628) instead, for an operator
// without a browser on this machine.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"
)

// Flow names accepted by -flow.
const (
	flowCode   = "code"
	flowDevice = "device"
)

// options holds the parsed command line.
type options struct {
	mount   string
	scopes  []string
	flow    string
	open    bool
	port    int
	timeout time.Duration
	params  map[string]string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run parses args, seeds the root grant and returns the exit code: 0 on
// success, 1 on failure, 2 on invalid usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "ci-tokens-seed:", err)
		return 2
	}

	client, err := newVaultClient()
	if err != nil {
		fmt.Fprintln(stderr, "ci-tokens-seed:", err)
		return 1
	}

	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()

	s := newSeeder(client, opts.mount, stderr)
	result, err := s.run(ctx, opts)
	if err != nil {
		fmt.Fprintln(stderr, "ci-tokens-seed:", err)
		return 1
	}
	fmt.Fprintf(stdout, "seeded the root grant of %s: generation %s, state %s\n", opts.mount, result.generation, result.state)
	return 0
}

// parseFlags parses the command line into options.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("ci-tokens-seed", flag.ContinueOnError)
	fs.SetOutput(stderr)

	opts := &options{params: map[string]string{}}
	var scopes string
	fs.StringVar(&opts.mount, "mount", "ci-tokens", "path of the ci-tokens mount")
	fs.StringVar(&scopes, "scopes", "offline_access", "space- or comma-separated scopes to request; the upstream issues a refresh token only for offline_access (or its own equivalent)")
	fs.StringVar(&opts.flow, "flow", flowCode, "grant to run: code (authorization code with PKCE on a loopback redirect) or device (RFC 8628 device authorization)")
	fs.BoolVar(&opts.open, "open", false, "open the authorization URL in the default browser")
	fs.IntVar(&opts.port, "port", 0, "loopback port of the redirect URI; 0 picks a free port, which upstreams that follow RFC 8252 accept")
	fs.DurationVar(&opts.timeout, "timeout", 10*time.Minute, "time allowed for the whole flow, including the operator's approval")
	fs.Func("param", "extra authorization request parameter as name=value, such as audience=https://api.example.com (repeatable)", func(value string) error {
		name, val, ok := strings.Cut(value, "=")
		if !ok || name == "" {
			return fmt.Errorf("expected name=value, got %q", value)
		}
		opts.params[name] = val
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: ci-tokens-seed [flags]")
		fmt.Fprintln(fs.Output(), "Seeds the root grant of a ci-tokens mount. Reads VAULT_ADDR and VAULT_TOKEN.")
		fs.PrintDefaults()
	}

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	opts.mount = strings.Trim(opts.mount, "/")
	opts.scopes = splitScopes(scopes)
	if opts.mount == "" {
		return nil, errors.New("-mount: must not be empty")
	}
	if opts.flow != flowCode && opts.flow != flowDevice {
		return nil, fmt.Errorf("-flow: must be %s or %s, got %q", flowCode, flowDevice, opts.flow)
	}
	if opts.port < 0 || opts.port > 65535 {
		return nil, fmt.Errorf("-port: must be from 0 to 65535, got %d", opts.port)
	}
	if opts.timeout <= 0 {
		return nil, fmt.Errorf("-timeout: must be positive, got %s", opts.timeout)
	}
	for _, reserved := range reservedParams {
		if _, ok := opts.params[reserved]; ok {
			return nil, fmt.Errorf("-param: %s is set by the command and cannot be overridden", reserved)
		}
	}
	return opts, nil
}

// reservedParams are the authorization request parameters the command sets
// itself; overriding them would break PKCE, the state check or the redirect.
var reservedParams = []string{
	"client_id", "response_type", "redirect_uri", "scope", "state",
	"code_challenge", "code_challenge_method",
}

// splitScopes splits a space- or comma-separated scope list.
func splitScopes(value string) []string {
	return strings.FieldsFunc(value, func(r rune) bool { return r == ' ' || r == ',' })
}

// newVaultClient builds a Vault client from the standard environment
// variables (VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, ...).
func newVaultClient() (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("reading the Vault client settings: %w", cfg.Error)
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the Vault client: %w", err)
	}
	if client.Token() == "" {
		return nil, errors.New("VAULT_TOKEN is not set; after vault login, run: export VAULT_TOKEN=\"$(vault print token)\"")
	}
	return client, nil
}
