package upstream

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMetadataURLs(t *testing.T) {
	tests := []struct {
		name   string
		issuer string
		want   []string
	}{
		{"no path", "https://idp.example.test", []string{
			"https://idp.example.test/.well-known/openid-configuration",
			"https://idp.example.test/.well-known/oauth-authorization-server",
		}},
		{"trailing slash", "https://idp.example.test/", []string{
			"https://idp.example.test/.well-known/openid-configuration",
			"https://idp.example.test/.well-known/oauth-authorization-server",
		}},
		{"path", "https://idp.example.test/realms/ci/", []string{
			"https://idp.example.test/realms/ci/.well-known/openid-configuration",
			"https://idp.example.test/.well-known/oauth-authorization-server/realms/ci",
			"https://idp.example.test/realms/ci/.well-known/oauth-authorization-server",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := metadataURLs(tt.issuer); !slices.Equal(got, tt.want) {
				t.Errorf("metadataURLs(%q) = %q, want %q", tt.issuer, got, tt.want)
			}
		})
	}
}

func TestDiscover(t *testing.T) {
	tests := []struct {
		name string
		// served maps a request path to the issuer its document names, or
		// to "" for a document without token_endpoint.
		served     map[string]string
		issuerPath string
		wantErr    string
	}{
		{"OpenID Connect", map[string]string{"/.well-known/openid-configuration": ""}, "", ""},
		{"RFC 8414 only", map[string]string{"/.well-known/oauth-authorization-server": ""}, "", ""},
		{"RFC 8414 with a path", map[string]string{"/.well-known/oauth-authorization-server/tenant": ""}, "/tenant", ""},
		{"nothing served", map[string]string{}, "", "HTTP 404"},
		{"other issuer", map[string]string{"/.well-known/openid-configuration": "https://evil.example.test"}, "", "names issuer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var server *httptest.Server
			server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				named, ok := tt.served[r.URL.Path]
				if !ok {
					http.NotFound(w, r)
					return
				}
				if named == "" {
					named = server.URL + tt.issuerPath
				}
				_ = json.NewEncoder(w).Encode(Metadata{Issuer: named, TokenEndpoint: server.URL + "/token"})
			}))
			defer server.Close()

			httpClient, err := NewHTTPClient(TLSOptions{}, time.Second)
			if err != nil {
				t.Fatalf("NewHTTPClient: %v", err)
			}
			md, err := Discover(context.Background(), httpClient, server.URL+tt.issuerPath)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Discover error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if md.TokenEndpoint != server.URL+"/token" {
				t.Errorf("token endpoint = %q, want %q", md.TokenEndpoint, server.URL+"/token")
			}
		})
	}
}
