package main

import (
	"bytes"
	"context"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    *options
		wantErr string
	}{
		{
			name: "defaults",
			want: &options{mount: "ci-tokens", scopes: []string{"offline_access"}, flow: flowCode, timeout: 10 * time.Minute, params: map[string]string{}},
		},
		{
			name: "every flag",
			args: []string{"-mount=/tokens/", "-scopes=openid,offline_access deploy", "-flow=device", "-open", "-port=8250", "-timeout=2m", "-param=audience=https://api.example.test"},
			want: &options{mount: "tokens", scopes: []string{"openid", "offline_access", "deploy"}, flow: flowDevice, open: true, port: 8250, timeout: 2 * time.Minute, params: map[string]string{"audience": "https://api.example.test"}},
		},
		{name: "unknown flow", args: []string{"-flow=implicit"}, wantErr: "-flow: must be code or device"},
		{name: "empty mount", args: []string{"-mount=/"}, wantErr: "-mount: must not be empty"},
		{name: "port out of range", args: []string{"-port=70000"}, wantErr: "-port: must be from 0 to 65535"},
		{name: "zero timeout", args: []string{"-timeout=0s"}, wantErr: "-timeout: must be positive"},
		{name: "param without value", args: []string{"-param=audience"}, wantErr: "expected name=value"},
		{name: "reserved param", args: []string{"-param=redirect_uri=https://evil.example.test"}, wantErr: "redirect_uri is set by the command"},
		{name: "positional argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error: got %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("options: got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadSettings(t *testing.T) {
	tests := []struct {
		name    string
		config  map[string]interface{}
		want    *upstreamSettings
		wantErr string
	}{
		{
			name: "discovered endpoints win",
			config: map[string]interface{}{
				"issuer":                 "https://auth.example.test",
				"client_id":              "engine",
				"authorization_endpoint": "",
				"endpoints": map[string]interface{}{
					"authorization_endpoint":        "https://auth.example.test/authorize",
					"device_authorization_endpoint": "https://auth.example.test/device",
				},
			},
			want: &upstreamSettings{issuer: "https://auth.example.test", clientID: "engine", authorizationEndpoint: "https://auth.example.test/authorize", deviceAuthorizationEndpoint: "https://auth.example.test/device"},
		},
		{
			name:   "explicit endpoints",
			config: map[string]interface{}{"client_id": "engine", "authorization_endpoint": "https://auth.example.test/a"},
			want:   &upstreamSettings{clientID: "engine", authorizationEndpoint: "https://auth.example.test/a"},
		},
		{name: "not configured", wantErr: "ci-tokens/config is not configured"},
		{name: "no client_id", config: map[string]interface{}{"issuer": "https://auth.example.test"}, wantErr: "has no client_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, client := newFakeVault(t, tt.config)
			s, _ := newTestSeeder(client)

			got, err := s.readSettings(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error: got %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readSettings: %v", err)
			}
			if *got != *tt.want {
				t.Errorf("settings: got %+v, want %+v", *got, *tt.want)
			}
		})
	}
}

func TestRunRejectsMissingEndpoint(t *testing.T) {
	tests := []struct {
		name    string
		flow    string
		config  map[string]interface{}
		wantErr string
	}{
		{name: "code without authorization endpoint", flow: flowCode, config: map[string]interface{}{"client_id": "engine"}, wantErr: "has no authorization_endpoint"},
		{name: "code hints at the device flow", flow: flowCode, config: map[string]interface{}{"client_id": "engine", "device_authorization_endpoint": "https://auth.example.test/device"}, wantErr: "use -flow=device"},
		{name: "device without device endpoint", flow: flowDevice, config: map[string]interface{}{"client_id": "engine", "authorization_endpoint": "https://auth.example.test/a"}, wantErr: "has no device_authorization_endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fv, client := newFakeVault(t, tt.config)
			s, _ := newTestSeeder(client)

			_, err := s.run(context.Background(), &options{flow: tt.flow})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error: got %v, want it to contain %q", err, tt.wantErr)
			}
			if n := len(fv.seedWrites()); n != 0 {
				t.Errorf("seed writes: got %d, want 0", n)
			}
		})
	}
}

func TestRunWithoutVaultToken(t *testing.T) {
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "")
	t.Setenv("HOME", t.TempDir())
	var stdout, stderr bytes.Buffer

	if code := run(context.Background(), nil, &stdout, &stderr); code != 1 {
		t.Errorf("exit code: got %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "VAULT_TOKEN is not set") {
		t.Errorf("stderr: got %q, want it to name VAULT_TOKEN", stderr.String())
	}
}

func TestRunUsageError(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-flow=implicit"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit code: got %d, want 2", code)
	}
}
