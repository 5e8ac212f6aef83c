package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// roleTTL is the deploy role's lease TTL during the run. Devstack writes
// 10m. A longer TTL means that no lease ends while the benchmark runs, so
// the live lease count only grows and no revocation traffic competes with
// the measured requests.
const roleTTL = "1h"

// bench is one benchmark run against one stack.
type bench struct {
	cfg     config
	stack   *devstack.Stack
	targets *targets
	report  *report

	vaultPID  int
	pluginPID int
	hydraPID  int

	// pprofAddr is the plugin's profiling address when cfg.profileDir is
	// set.
	pprofAddr string

	// mints counts successful mints since the plugin started.
	mints atomic.Int64
}

// progress prints a line about the run to stderr, apart from the tables.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(ctx context.Context, cfg config) (err error) {
	b := &bench{cfg: cfg, report: &report{StartedAt: time.Now().UTC()}}
	opts := devstack.Options{
		Dir:           cfg.dir,
		VaultLogLevel: cfg.vaultLogLevel,
		Logf:          progress,
	}
	if cfg.profileDir != "" {
		port, err := devstack.FreePort()
		if err != nil {
			return fmt.Errorf("pick the plugin's profiling port: %w", err)
		}
		b.pprofAddr = "127.0.0.1:" + strconv.Itoa(port)
		opts.PluginBuildTags = []string{"pprof"}
		opts.PluginEnv = []string{pprofAddrVariable + "=" + b.pprofAddr}
	}
	b.stack, err = devstack.Up(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		// Vault's dev server keeps leases in memory and does not revoke
		// them on shutdown, so stopping it ends the run at once, however
		// many leases are outstanding.
		begin := time.Now()
		err = errors.Join(err, b.stack.Close())
		progress("stopped Vault and Hydra in %s", time.Since(begin).Round(time.Millisecond))
	}()

	if err := b.prepare(ctx); err != nil {
		return err
	}
	if err := b.runPhases(ctx); err != nil {
		return err
	}
	if cfg.profileDir != "" {
		if err := b.profile(ctx); err != nil {
			return err
		}
	}

	b.report.FinishedAt = time.Now().UTC()
	b.report.computeRatios()
	b.report.evaluateTargets()
	if err := b.report.writeJSON(cfg.out); err != nil {
		return err
	}
	b.report.writeTables(os.Stdout)
	progress("wrote %s", cfg.out)
	return nil
}

// prepare sets the role's TTL, mounts kv-v2 for scenario B, sizes its
// payload from a real mint and finds the server processes.
func (b *bench) prepare(ctx context.Context) error {
	client := b.stack.Vault.Client
	_, err := client.Logical().WriteWithContext(ctx, devstack.MountPath+"/roles/"+devstack.RoleName, map[string]any{
		"strategy": devstack.RoleStrategy,
		"scopes":   devstack.RoleScope,
		"audience": devstack.Audience,
		"ttl":      roleTTL,
		"max_ttl":  devstack.RoleMaxTTL,
	})
	if err != nil {
		return fmt.Errorf("write the deploy role: %w", err)
	}
	err = client.Sys().MountWithContext(ctx, kvMountPath, &api.MountInput{
		Type:    "kv",
		Options: map[string]string{"version": "2"},
	})
	if err != nil {
		return fmt.Errorf("mount kv-v2 at %s: %w", kvMountPath, err)
	}

	b.targets = newTargets(b.stack, slices.Max(append(b.cfg.levels, b.cfg.mintConcurrency)))
	b.targets.kvBody, err = b.kvBodyLikeMint(ctx)
	if err != nil {
		return err
	}
	if err := b.waitForKV(ctx); err != nil {
		return err
	}

	b.vaultPID, b.hydraPID = b.stack.Vault.PID(), b.stack.Hydra.PID()
	b.pluginPID, err = findChildByExe(b.vaultPID, b.stack.Plugin.Path)
	if err != nil {
		return fmt.Errorf("find the plugin process: %w", err)
	}
	b.fillHeader()
	if b.cfg.separateCores {
		return b.separateCores()
	}
	return nil
}

// kvBodyLikeMint mints one token and returns a kv-v2 write body with the
// same fields and sizes as the mint's response data. The access token is
// replaced by random hex of the same length, so no token reaches kv.
func (b *bench) kvBodyLikeMint(ctx context.Context) ([]byte, error) {
	secret, err := b.stack.Vault.Client.Logical().WriteWithContext(ctx, devstack.MountPath+"/creds/"+devstack.RoleName, nil)
	if err != nil {
		return nil, fmt.Errorf("mint a token to size the kv-v2 payload: %w", err)
	}
	if secret == nil || secret.Data == nil {
		return nil, errors.New("mint a token to size the kv-v2 payload: empty response")
	}
	b.mints.Add(1)
	data := secret.Data
	token, _ := data["access_token"].(string)
	filler := make([]byte, (len(token)+1)/2)
	if _, err := rand.Read(filler); err != nil {
		return nil, err
	}
	data["access_token"] = hex.EncodeToString(filler)[:len(token)]
	return json.Marshal(map[string]any{"data": data})
}

// waitForKV writes to the new kv-v2 mount until it accepts writes: Vault
// sets up a kv-v2 mount in the background and rejects writes until then.
func (b *bench) waitForKV(ctx context.Context) error {
	const attempts = 50
	var err error
	for attempt := range attempts {
		if err = b.targets.kvWrite(ctx, -1, attempt); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("kv-v2 mount %s not writable after %d attempts: %w", kvMountPath, attempts, err)
}

// fillHeader records the machine, the versions and the settings.
func (b *bench) fillHeader() {
	r := b.report
	r.Machine = readMachineInfo(runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH)
	r.Versions = versions{
		Go:     runtime.Version(),
		Vault:  strings.TrimPrefix(filepath.Base(b.stack.Tools.Vault), "vault-"),
		Hydra:  strings.TrimPrefix(filepath.Base(b.stack.Tools.Hydra), "hydra-"),
		Plugin: b.stack.Plugin.Version,
		Commit: gitCommit(),
	}
	r.LoadAverage = loadAverage()
	r.Settings = settings{
		Levels:          b.cfg.levels,
		DurationSeconds: b.cfg.duration.Seconds(),
		Rounds:          b.cfg.rounds,
		MaxRequests:     b.cfg.maxRequests,
		WarmupSeconds:   b.cfg.warmup.Seconds(),
		Mints:           b.cfg.mints,
		MintConcurrency: b.cfg.mintConcurrency,
		RotateEverySecs: b.cfg.rotateEvery.Seconds(),
		SeparateCores:   b.cfg.separateCores,
		VaultLogLevel:   b.cfg.vaultLogLevel,
		MaxOtherCores:   b.cfg.maxOtherCores,
		LevelAttempts:   b.cfg.levelAttempts,
		KVPayloadBytes:  len(b.targets.kvBody),
	}
}

// gitCommit returns the working tree's commit, with "-dirty" when tracked
// files have changed, or "" outside a git checkout.
func gitCommit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
