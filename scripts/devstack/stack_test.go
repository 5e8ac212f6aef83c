package devstack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUpMintsAndRevokes(t *testing.T) {
	s := UpForTest(t, Options{})
	ctx := testContext(t)

	secret, err := s.Vault.Client.Logical().WriteWithContext(ctx, MountPath+"/creds/"+RoleName, nil)
	if err != nil {
		t.Fatalf("write creds: %v", err)
	}
	accessToken, _ := secret.Data["access_token"].(string)
	if accessToken == "" {
		t.Fatalf("creds response has no access_token; keys %v", keys(secret.Data))
	}

	got, err := s.Hydra.Introspect(ctx, accessToken)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	if !got.Active {
		t.Fatalf("minted token: active = false, want true")
	}
	if !slices.Contains(got.Scopes(), RoleScope) {
		t.Errorf("minted token scope = %q, want %q", got.Scope, RoleScope)
	}
	if !slices.Contains(got.Audience, Audience) {
		t.Errorf("minted token aud = %q, want %q", got.Audience, Audience)
	}
	if got.ClientID != s.EngineClient.ID {
		t.Errorf("minted token client_id = %q, want %q", got.ClientID, s.EngineClient.ID)
	}

	if err := s.Vault.Client.Sys().RevokeWithContext(ctx, secret.LeaseID); err != nil {
		t.Fatalf("revoke lease: %v", err)
	}
	got, err = s.Hydra.Introspect(ctx, accessToken)
	if err != nil {
		t.Fatalf("introspect after revoke: %v", err)
	}
	if got.Active {
		t.Errorf("revoked token: active = true, want false")
	}
}

func TestCloseEndsEveryProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Vault and Hydra servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s, err := Up(ctx, Options{Until: StageMounted, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start devstack: %v", err)
	}
	groups := []int{s.Vault.PID(), s.Hydra.PID()}
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	for _, pgid := range groups {
		if groupAlive(pgid) {
			t.Errorf("process group %d is still alive after Close", pgid)
		}
	}
}

// TestParentDeathEndsServers kills a helper process that started a stack
// with the plugin mounted and checks that Vault, its plugin process and
// Hydra end with it.
func TestParentDeathEndsServers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Vault and Hydra servers")
	}
	if _, err := os.Stat("/proc/self"); err != nil {
		t.Skip("needs Linux: the parent-death signal is Linux-only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	helper := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperStack$", "-test.v")
	helper.Env = append(os.Environ(), "DEVSTACK_HELPER_DIR="+t.TempDir())
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	groups, err := readHelperGroups(stdout)
	if err != nil {
		_ = helper.Process.Kill()
		_ = helper.Wait()
		t.Fatalf("helper: %v", err)
	}
	for _, pgid := range groups {
		if !groupAlive(pgid) {
			t.Fatalf("process group %d is not alive before the helper dies", pgid)
		}
	}

	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()

	deadline := time.Now().Add(30 * time.Second)
	for _, pgid := range groups {
		for groupAlive(pgid) && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		if groupAlive(pgid) {
			t.Errorf("process group %d is still alive 30s after its parent died", pgid)
			// Clean up what the test started, by group id.
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
}

// TestHelperStack is the helper process of TestParentDeathEndsServers; it
// does nothing unless that test starts it.
func TestHelperStack(t *testing.T) {
	dir := os.Getenv("DEVSTACK_HELPER_DIR")
	if dir == "" {
		t.Skip("helper process for TestParentDeathEndsServers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s, err := Up(ctx, Options{Until: StageMounted, Dir: dir})
	if err != nil {
		t.Fatalf("start devstack: %v", err)
	}
	// Mounting starts the plugin process inside Vault's group.
	if !groupHasMember(s.Vault.PID()) {
		t.Fatalf("vault's process group has no plugin process")
	}
	fmt.Printf("groups %d %d\n", s.Vault.PID(), s.Hydra.PID())
	// Wait to be killed; the deadline only bounds a run gone wrong.
	<-ctx.Done()
}

func readHelperGroups(stdout interface{ Read([]byte) (int, error) }) ([]int, error) {
	scanner := bufio.NewScanner(stdout)
	for scanner.Scan() {
		line := scanner.Text()
		fields := strings.Fields(line)
		if len(fields) != 3 || fields[0] != "groups" {
			continue
		}
		var groups []int
		for _, field := range fields[1:] {
			pgid, err := strconv.Atoi(field)
			if err != nil {
				return nil, fmt.Errorf("parse %q: %w", line, err)
			}
			groups = append(groups, pgid)
		}
		return groups, nil
	}
	return nil, errors.New("exited without printing its process groups")
}

// groupAlive reports whether any process is in process group pgid.
func groupAlive(pgid int) bool {
	return pgid > 0 && syscall.Kill(-pgid, 0) == nil
}

// groupHasMember reports whether process group pgid has a process other
// than its leader, read from /proc.
func groupHasMember(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil || pid == pgid {
			continue
		}
		if got, err := syscall.Getpgid(pid); err == nil && got == pgid {
			return true
		}
	}
	return false
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for key := range m {
		out = append(out, key)
	}
	slices.Sort(out)
	return out
}

// TestEngineClientRedirectURIs sends authorization requests for EngineClient
// with several redirect URIs and checks where Hydra sends the browser: to the
// login page for a registered URI, to the error page otherwise.
func TestEngineClientRedirectURIs(t *testing.T) {
	s := UpForTest(t, Options{Until: StageServers})
	ctx := testContext(t)

	tests := []struct {
		name        string
		redirectURI string
		wantPath    string
	}{
		{"harness callback", s.Hydra.harnessRedirectURI(), "/devstack/login"},
		{"seed command on a random port", "http://127.0.0.1:54321/callback", "/devstack/login"},
		{"seed command without a port", SeedCommandRedirectURI, "/devstack/login"},
		{"unregistered loopback path", "http://127.0.0.1:54321/other", "/devstack/error"},
	}
	client := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			query := url.Values{
				"client_id":     {s.EngineClient.ID},
				"response_type": {"code"},
				"scope":         {strings.Join(EngineScopes, " ")},
				"redirect_uri":  {tt.redirectURI},
				"state":         {"state-for-the-redirect-test"},
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Hydra.PublicURL+"/oauth2/auth?"+query.Encode(), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("authorization request: %v", err)
			}
			resp.Body.Close()
			location, err := resp.Location()
			if err != nil {
				t.Fatalf("authorization response %s has no Location: %v", resp.Status, err)
			}
			if got := location.Path; got != tt.wantPath {
				t.Errorf("redirect path = %q, want %q (Location %s)", got, tt.wantPath, location.Redacted())
			}
		})
	}
}
