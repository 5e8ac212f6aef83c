// Command demo walks through the ci-tokens engine against a real Vault dev
// server and a real Ory Hydra on 127.0.0.1. It registers and mounts the
// plugin, configures the upstream and writes a role. Then it mints a CI
// token, checks it with Hydra's own introspection and revokes it. Last, it
// rotates the root grant and reads the status. Every Vault step runs the
// vault CLI and prints the command with its output. The demo exits non-zero
// when a step fails or a check does not hold, and stops the servers either
// way.
//
// Run it with `make demo` or `go run ./scripts/demo` from the repository
// root.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

// demo prints numbered steps and runs vault CLI commands against the stack.
type demo struct {
	out   io.Writer
	stack *devstack.Stack
	step  int
}

func run(ctx context.Context, out io.Writer) (err error) {
	d := &demo{out: out}
	d.heading("Start Ory Hydra and a Vault dev server on 127.0.0.1")
	stack, err := devstack.Up(ctx, devstack.Options{
		Until: devstack.StageServers,
		Logf:  func(format string, args ...any) { fmt.Fprintf(out, "  "+format+"\n", args...) },
	})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(out, "\nStopping Vault and Hydra.")
		err = errors.Join(err, stack.Close())
	}()
	d.stack = stack
	d.printServers()

	steps := []func(context.Context) error{
		d.registerPlugin,
		d.mountPlugin,
		d.configure,
		d.writeRole,
		d.mintRevokeToken,
		d.rotateRoot,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "\nThe demo finished: every step above ran against the real servers.")
	return nil
}

func (d *demo) printServers() {
	s := d.stack
	fmt.Fprintf(d.out, "  hydra: issuer %s, admin API %s\n", s.Hydra.PublicURL, s.Hydra.AdminURL)
	fmt.Fprintf(d.out, "  vault: %s (dev mode, in-memory storage), log %s\n", s.Vault.Addr, s.Vault.LogPath)
	fmt.Fprintf(d.out, "  hydra client for the engine: %s\n", s.EngineClient.ID)
	fmt.Fprintf(d.out, "  every vault command below runs with VAULT_ADDR=%s and the root token in VAULT_TOKEN\n", s.Vault.Addr)
}

func (d *demo) registerPlugin(ctx context.Context) error {
	p := d.stack.Plugin
	d.heading("Register the plugin in the catalog by sha256 and version")
	fmt.Fprintf(d.out, "  built %s (%s) into the plugin directory %s\n", p.Name, p.Version, p.Dir)
	_, err := d.vault(ctx, "plugin", "register", "-sha256="+p.SHA256, "-version="+p.Version, "secret", p.Name)
	if err != nil {
		return err
	}
	_, err = d.vault(ctx, "plugin", "info", "-version="+p.Version, "secret", p.Name)
	return err
}

func (d *demo) mountPlugin(ctx context.Context) error {
	p := d.stack.Plugin
	d.heading("Mount it at " + devstack.MountPath + "/")
	_, err := d.vault(ctx, "secrets", "enable", "-path="+devstack.MountPath, "-plugin-version="+p.Version, p.Name)
	if err != nil {
		return err
	}
	_, err = d.vault(ctx, "secrets", "list")
	return err
}

func (d *demo) configure(ctx context.Context) error {
	s := d.stack
	d.heading("Configure the upstream with a client and a root refresh token")
	if _, err := s.SeedRootGrant(ctx); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  seeded a refresh token for client %s with Hydra's authorization code flow,\n", s.EngineClient.ID)
	fmt.Fprintln(d.out, "  accepting login and consent through Hydra's admin API (scopes "+strings.Join(devstack.EngineScopes, " ")+")")
	fmt.Fprintln(d.out, "  the secrets go in on stdin, so they never appear in a process list; shown shortened:")

	request := s.ConfigRequest()
	redacted := map[string]any{}
	for key, value := range request {
		redacted[key] = value
	}
	redacted["client_secret"] = devstack.Redact(s.EngineClient.Secret)
	redacted["refresh_token"] = devstack.Redact(s.RootSeed.RefreshToken)
	body, err := json.Marshal(request)
	if err != nil {
		return err
	}
	redactedBody, err := json.MarshalIndent(redacted, "  ", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  %s\n", redactedBody)
	if _, err := d.vaultStdin(ctx, body, "write", devstack.MountPath+"/config", "-"); err != nil {
		return err
	}
	_, err = d.vault(ctx, "read", devstack.MountPath+"/config")
	return err
}

func (d *demo) writeRole(ctx context.Context) error {
	d.heading("Write the role " + devstack.RoleName + " and read it back")
	role := devstack.MountPath + "/roles/" + devstack.RoleName
	_, err := d.vault(ctx, "write", role,
		"strategy="+devstack.RoleStrategy,
		"scopes="+devstack.RoleScope,
		"audience="+devstack.Audience,
		"ttl="+devstack.RoleTTL,
		"max_ttl="+devstack.RoleMaxTTL,
	)
	if err != nil {
		return err
	}
	_, err = d.vault(ctx, "read", role)
	return err
}

// credsResponse is the part of `vault write -format=json creds/<role>`
// that the demo prints.
type credsResponse struct {
	LeaseID       string         `json:"lease_id"`
	LeaseDuration int            `json:"lease_duration"`
	Renewable     bool           `json:"renewable"`
	Data          map[string]any `json:"data"`
}

func (d *demo) mintRevokeToken(ctx context.Context) error {
	d.heading("Mint a CI token, as a CI job would")
	output, err := d.vaultQuiet(ctx, "write", "-f", "-format=json", devstack.MountPath+"/creds/"+devstack.RoleName)
	if err != nil {
		return err
	}
	var creds credsResponse
	if err := json.Unmarshal(output, &creds); err != nil {
		return fmt.Errorf("decode creds response: %w", err)
	}
	accessToken, _ := creds.Data["access_token"].(string)
	if accessToken == "" {
		return errors.New("creds response has no access_token")
	}
	d.printCreds(creds, accessToken)

	d.heading("Ask Hydra's admin introspection endpoint about that token")
	if err := d.introspect(ctx, accessToken, true); err != nil {
		return err
	}

	d.heading("Revoke the lease: the engine revokes the token at Hydra")
	if _, err := d.vault(ctx, "lease", "revoke", creds.LeaseID); err != nil {
		return err
	}
	return d.introspect(ctx, accessToken, false)
}

// printCreds prints the creds response as a key/value table with the
// access token shortened to a prefix.
func (d *demo) printCreds(creds credsResponse, accessToken string) {
	fmt.Fprintln(d.out, "  (output as a table, access_token shortened to a prefix)")
	rows := [][2]string{
		{"lease_id", creds.LeaseID},
		{"lease_duration", formatSeconds(creds.LeaseDuration)},
		{"lease_renewable", strconv.FormatBool(creds.Renewable)},
	}
	keys := make([]string, 0, len(creds.Data))
	for key := range creds.Data {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		value := fmt.Sprint(creds.Data[key])
		if key == "access_token" {
			value = devstack.Redact(accessToken)
		}
		rows = append(rows, [2]string{key, value})
	}
	d.table(rows)
}

// introspect prints Hydra's introspection of token and checks that its
// activity is wantActive, with the role's scope and audience when active.
// Lease revocation may finish after the CLI returns, so an expected inactive
// token is polled for up to 10 seconds.
func (d *demo) introspect(ctx context.Context, token string, wantActive bool) error {
	hydra := d.stack.Hydra
	fmt.Fprintf(d.out, "  POST %s/admin/oauth2/introspect with token=<the access token>:\n", hydra.AdminURL)
	deadline := time.Now().Add(10 * time.Second)
	var got devstack.Introspection
	for {
		var err error
		got, err = hydra.Introspect(ctx, token)
		if err != nil {
			return err
		}
		if got.Active == wantActive || wantActive || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}

	rows := [][2]string{{"active", strconv.FormatBool(got.Active)}}
	if got.Active {
		rows = append(rows,
			[2]string{"scope", got.Scope},
			[2]string{"aud", strings.Join(got.Audience, " ")},
			[2]string{"client_id", got.ClientID},
			[2]string{"exp", got.ExpiresAt.Format(time.RFC3339)},
		)
	}
	d.table(rows)

	switch {
	case got.Active != wantActive:
		return fmt.Errorf("hydra introspection: active = %t, want %t", got.Active, wantActive)
	case wantActive && !slices.Contains(got.Scopes(), devstack.RoleScope):
		return fmt.Errorf("hydra introspection: scope %q lacks %q", got.Scope, devstack.RoleScope)
	case wantActive && !slices.Contains(got.Audience, devstack.Audience):
		return fmt.Errorf("hydra introspection: aud %q lacks %q", got.Audience, devstack.Audience)
	}
	return nil
}

func (d *demo) rotateRoot(ctx context.Context) error {
	d.heading("Rotate the root grant on demand")
	before, err := d.generation(ctx)
	if err != nil {
		return err
	}
	if _, err := d.vault(ctx, "write", "-f", devstack.MountPath+"/rotate-root"); err != nil {
		return err
	}
	after, err := d.generation(ctx)
	if err != nil {
		return err
	}
	if after != before+1 {
		return fmt.Errorf("rotate-root moved the generation from %d to %d, want %d", before, after, before+1)
	}

	d.heading("Read the health of the root grant")
	_, err = d.vault(ctx, "read", devstack.MountPath+"/status")
	return err
}

// generation prints and returns the generation from ci-tokens/status.
func (d *demo) generation(ctx context.Context) (int, error) {
	output, err := d.vault(ctx, "read", "-field=generation", devstack.MountPath+"/status")
	if err != nil {
		return 0, err
	}
	fmt.Fprintln(d.out)
	generation, err := strconv.Atoi(strings.TrimSpace(string(output)))
	if err != nil {
		return 0, fmt.Errorf("parse generation %q: %w", output, err)
	}
	return generation, nil
}

// heading prints the next numbered step.
func (d *demo) heading(title string) {
	d.step++
	fmt.Fprintf(d.out, "\n== %d. %s ==\n", d.step, title)
}

// vault runs the vault CLI, printing the command and its output.
func (d *demo) vault(ctx context.Context, args ...string) ([]byte, error) {
	d.printCommand(args)
	output, err := d.runVault(ctx, nil, args)
	d.out.Write(output)
	return output, err
}

// vaultQuiet runs the vault CLI, printing the command but not its output,
// for output that contains a secret.
func (d *demo) vaultQuiet(ctx context.Context, args ...string) ([]byte, error) {
	d.printCommand(args)
	return d.runVault(ctx, nil, args)
}

// vaultStdin runs the vault CLI with stdin, printing the command and its
// output but not stdin.
func (d *demo) vaultStdin(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	d.printCommand(args)
	output, err := d.runVault(ctx, stdin, args)
	d.out.Write(output)
	return output, err
}

func (d *demo) printCommand(args []string) {
	fmt.Fprintf(d.out, "$ vault %s\n", strings.Join(args, " "))
}

func (d *demo) runVault(ctx context.Context, stdin []byte, args []string) ([]byte, error) {
	cmd := d.stack.Vault.Command(ctx, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("vault %s: %w\n%s", args[0], err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// table prints rows in the vault CLI's Key/Value layout.
func (d *demo) table(rows [][2]string) {
	w := tabwriter.NewWriter(d.out, 0, 4, 4, ' ', 0)
	fmt.Fprintln(w, "Key\tValue")
	fmt.Fprintln(w, "---\t-----")
	for _, row := range rows {
		fmt.Fprintf(w, "%s\t%s\n", row[0], row[1])
	}
	w.Flush()
}

// formatSeconds formats a duration in seconds the way the vault CLI does in
// tables: 10m rather than 10m0s.
func formatSeconds(seconds int) string {
	text := (time.Duration(seconds) * time.Second).String()
	if strings.HasSuffix(text, "m0s") {
		text = strings.TrimSuffix(text, "0s")
	}
	if strings.HasSuffix(text, "h0m") {
		text = strings.TrimSuffix(text, "0m")
	}
	return text
}
