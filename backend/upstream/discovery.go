package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Metadata is the part of an authorization server's metadata (RFC 8414,
// OpenID Connect Discovery 1.0) that the engine uses.
type Metadata struct {
	Issuer                      string   `json:"issuer"`
	TokenEndpoint               string   `json:"token_endpoint"`
	RevocationEndpoint          string   `json:"revocation_endpoint"`
	AuthorizationEndpoint       string   `json:"authorization_endpoint"`
	DeviceAuthorizationEndpoint string   `json:"device_authorization_endpoint"`
	GrantTypesSupported         []string `json:"grant_types_supported"`
}

// maxMetadataBody bounds the size of a discovery document.
const maxMetadataBody = 1 << 20

// metadataURLs returns the discovery URLs to try for issuer, in order:
// OpenID Connect Discovery first, because more upstreams serve it, then
// RFC 8414. RFC 8414 section 3.1 inserts the well-known path between the
// host and the issuer's path. Some servers serve it appended to the issuer
// instead, so for an issuer with a path that form is tried last.
func metadataURLs(issuer string) []string {
	base := strings.TrimSuffix(issuer, "/")
	urls := []string{base + "/.well-known/openid-configuration"}
	u, err := url.Parse(base)
	if err != nil || u.Path == "" {
		return append(urls, base+"/.well-known/oauth-authorization-server")
	}
	inserted := *u
	inserted.Path = "/.well-known/oauth-authorization-server" + u.Path
	inserted.RawPath = ""
	return append(urls, inserted.String(), base+"/.well-known/oauth-authorization-server")
}

// Discover fetches the metadata of issuer. It checks that the document names
// the same issuer (RFC 8414 section 3.3), which stops a misconfigured proxy
// from pointing the engine at another server.
func Discover(ctx context.Context, httpClient *http.Client, issuer string) (*Metadata, error) {
	base := strings.TrimSuffix(issuer, "/")
	var lastErr error
	for _, metadataURL := range metadataURLs(issuer) {
		md, err := fetchMetadata(ctx, httpClient, metadataURL)
		if err != nil {
			lastErr = err
			continue
		}
		if strings.TrimSuffix(md.Issuer, "/") != base {
			return nil, fmt.Errorf("discovery document at %s names issuer %q, not %q", metadataURL, md.Issuer, issuer)
		}
		if md.TokenEndpoint == "" {
			return nil, fmt.Errorf("discovery document at %s has no token_endpoint", metadataURL)
		}
		return md, nil
	}
	return nil, lastErr
}

// fetchMetadata GETs and decodes one discovery document.
func fetchMetadata(ctx context.Context, httpClient *http.Client, url string) (*Metadata, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("invalid discovery URL %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")

	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %s", url, transportReason(err))
	}
	defer drainAndClose(resp)

	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: HTTP %d", url, resp.StatusCode)
	}
	var md Metadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxMetadataBody)).Decode(&md); err != nil {
		return nil, fmt.Errorf("discovery document at %s is not valid JSON", url)
	}
	return &md, nil
}
