package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// pprofAddrVariable is the environment variable in which a plugin built
// with -tags pprof finds its profiling address.
const pprofAddrVariable = "CI_TOKENS_PPROF_ADDR"

// profile runs scenario A at cfg.profileConcurrency for cfg.duration while
// it records CPU profiles of the plugin and of Vault, then saves the
// plugin's heap profile. It writes plugin-cpu.pprof, vault-cpu.pprof and
// plugin-heap.pprof to cfg.profileDir.
func (b *bench) profile(ctx context.Context) error {
	if err := os.MkdirAll(b.cfg.profileDir, 0o755); err != nil {
		return fmt.Errorf("create the profile directory: %w", err)
	}
	seconds := max(int(b.cfg.duration/time.Second), 1)
	query := "?seconds=" + strconv.Itoa(seconds)
	pluginURL := "http://" + b.pprofAddr + "/debug/pprof/"
	progress("profiling the plugin and Vault for %ds at concurrency %d", seconds, b.cfg.profileConcurrency)

	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		runLoad(loadCtx, loadSpec{concurrency: b.cfg.profileConcurrency, duration: time.Duration(seconds+1) * time.Second}, b.countedMint)
	}()
	vaultErr := make(chan error, 1)
	go func() {
		vaultErr <- b.saveProfile(ctx, b.stack.Vault.Addr+"/v1/sys/pprof/profile"+query, "vault-cpu.pprof")
	}()
	err := b.saveProfile(ctx, pluginURL+"profile"+query, "plugin-cpu.pprof")
	err = errors.Join(err, <-vaultErr)
	stopLoad()
	<-loadDone
	if err != nil {
		return err
	}
	if err := b.saveProfile(ctx, pluginURL+"heap", "plugin-heap.pprof"); err != nil {
		return err
	}
	progress("wrote profiles to %s; read one with: go tool pprof -top %s", b.cfg.profileDir, filepath.Join(b.cfg.profileDir, "plugin-cpu.pprof"))
	return nil
}

// saveProfile downloads one profile to name in cfg.profileDir. Vault's
// endpoint requires the root token, and the plugin's ignores it.
func (b *bench) saveProfile(ctx context.Context, url, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", b.stack.Vault.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetch %s: %s: %s", name, resp.Status, body)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", name, err)
	}
	return os.WriteFile(filepath.Join(b.cfg.profileDir, name), data, 0o644)
}
