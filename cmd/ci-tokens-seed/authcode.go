package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/oauth2"
)

// callbackPath is the path of the loopback redirect URI.
const callbackPath = "/callback"

// consentError is an authorization error the upstream sent to the redirect
// URI (RFC 6749 section 4.1.2.1), such as access_denied.
type consentError struct {
	code        string
	description string
}

func (e *consentError) Error() string {
	if e.description == "" {
		return "the upstream did not authorize the request: " + e.code
	}
	return fmt.Sprintf("the upstream did not authorize the request: %s: %s", e.code, e.description)
}

// seedWithAuthorizationCode runs the authorization code flow with PKCE on a
// loopback redirect and hands the code to the engine.
func (s *seeder) seedWithAuthorizationCode(ctx context.Context, settings *upstreamSettings, opts *options) (*seedResult, error) {
	// RFC 8252 section 7.3: listen on the loopback IP literal, not
	// "localhost", which may resolve elsewhere or to IPv6 only.
	listener, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.port)))
	if err != nil {
		return nil, fmt.Errorf("listening for the redirect on 127.0.0.1: %w", err)
	}
	redirectURI := fmt.Sprintf("http://127.0.0.1:%d%s", listener.Addr().(*net.TCPAddr).Port, callbackPath)

	state, err := randomState()
	if err != nil {
		return nil, err
	}
	verifier := oauth2.GenerateVerifier()
	authURL := authorizationURL(settings, opts, redirectURI, state, verifier)

	receiver := newCallbackReceiver(state, settings.issuer)
	server := &http.Server{Handler: receiver, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = server.Serve(listener) }()
	defer server.Close()

	fmt.Fprintf(s.out, "Open this URL in a browser, sign in as the account whose grant the engine should hold, and approve:\n\n  %s\n\nWaiting for the redirect to %s ...\n", authURL, redirectURI)
	if opts.open {
		if err := s.openBrowser(authURL); err != nil {
			fmt.Fprintf(s.out, "Could not open a browser (%v); open the URL by hand.\n", err)
		}
	}

	code, err := receiver.wait(ctx)
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(s.out, "Authorization received; the engine is redeeming it.")

	result, err := s.writeSeed(ctx, map[string]interface{}{
		"code":          code,
		"code_verifier": verifier,
		"redirect_uri":  redirectURI,
	})
	if err != nil {
		return nil, fmt.Errorf("writing the authorization code to %s/seed: %w", s.mount, err)
	}
	return result, nil
}

// authorizationURL builds the authorization request URL with an S256 PKCE
// challenge for verifier.
func authorizationURL(settings *upstreamSettings, opts *options, redirectURI, state, verifier string) string {
	conf := &oauth2.Config{
		ClientID:    settings.clientID,
		Endpoint:    oauth2.Endpoint{AuthURL: settings.authorizationEndpoint},
		RedirectURL: redirectURI,
		Scopes:      opts.scopes,
	}
	authOpts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier)}
	for name, value := range opts.params {
		authOpts = append(authOpts, oauth2.SetAuthURLParam(name, value))
	}
	return conf.AuthCodeURL(state, authOpts...)
}

// randomState returns 256 random bits, base64url-encoded, for the state
// parameter that ties the redirect to this run.
func randomState() (string, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generating the state parameter: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

// callbackResult is the outcome of the one redirect that carried the
// expected state.
type callbackResult struct {
	code string
	err  error
}

// callbackReceiver serves the loopback redirect URI. It accepts the first
// request whose state matches and ignores every other request, so a stray or
// forged request can neither finish nor abort the flow.
type callbackReceiver struct {
	state  string
	issuer string
	once   sync.Once
	done   chan callbackResult
}

func newCallbackReceiver(state, issuer string) *callbackReceiver {
	return &callbackReceiver{state: state, issuer: issuer, done: make(chan callbackResult, 1)}
}

func (c *callbackReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != callbackPath {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	query := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(query.Get("state")), []byte(c.state)) != 1 {
		http.Error(w, "invalid or missing state parameter; this request was ignored", http.StatusBadRequest)
		return
	}
	// RFC 9207: an upstream that names itself in iss must be the one that
	// the engine is configured for, which defeats mix-up attacks.
	if iss := query.Get("iss"); iss != "" && c.issuer != "" && iss != c.issuer {
		c.finish(callbackResult{err: fmt.Errorf("the redirect came from issuer %q, but %q is configured", iss, c.issuer)})
		http.Error(w, "unexpected issuer; authorization rejected", http.StatusBadRequest)
		return
	}

	var result callbackResult
	switch {
	case query.Get("error") != "":
		result.err = &consentError{code: query.Get("error"), description: query.Get("error_description")}
	case query.Get("code") == "":
		result.err = errors.New("the redirect carried neither a code nor an error")
	default:
		result.code = query.Get("code")
	}
	if !c.finish(result) {
		http.Error(w, "this authorization was already received", http.StatusGone)
		return
	}

	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if result.err != nil {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintln(w, "Authorization failed; see the terminal for details.")
		return
	}
	fmt.Fprintln(w, "Authorization received. You can close this window and return to the terminal.")
}

// finish records the first result and reports whether r was it.
func (c *callbackReceiver) finish(r callbackResult) bool {
	first := false
	c.once.Do(func() {
		c.done <- r
		first = true
	})
	return first
}

// wait returns the code of the accepted redirect, or its error.
func (c *callbackReceiver) wait(ctx context.Context) (string, error) {
	select {
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for the redirect: %w", ctx.Err())
	case r := <-c.done:
		return r.code, r.err
	}
}

// openInBrowser starts the platform's URL handler without waiting for it.
func openInBrowser(url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.Command("open", url)
	case "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.Command("xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return nil
}
