package main

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/oauth2"
)

// Device flow polling limits from RFC 8628 section 3.5.
const (
	defaultPollInterval = 5 * time.Second
	slowDownIncrement   = 5 * time.Second
)

// seedWithDeviceCode runs the device authorization grant. It requests a
// device code from the upstream in a public request with only client_id and
// scope, and shows the user code. Then it sends the device code to the engine
// for redemption until the operator has approved or the code expires.
func (s *seeder) seedWithDeviceCode(ctx context.Context, settings *upstreamSettings, opts *options) (*seedResult, error) {
	conf := &oauth2.Config{
		ClientID: settings.clientID,
		Endpoint: oauth2.Endpoint{DeviceAuthURL: settings.deviceAuthorizationEndpoint},
		Scopes:   opts.scopes,
	}
	var authOpts []oauth2.AuthCodeOption
	for name, value := range opts.params {
		authOpts = append(authOpts, oauth2.SetAuthURLParam(name, value))
	}
	device, err := conf.DeviceAuth(ctx, authOpts...)
	if err != nil {
		return nil, fmt.Errorf("requesting a device code from %s: %w", settings.deviceAuthorizationEndpoint, err)
	}

	fmt.Fprintf(s.out, "On any device, open\n\n  %s\n\nand enter the code %s", device.VerificationURI, device.UserCode)
	if device.VerificationURIComplete != "" {
		fmt.Fprintf(s.out, " (or open %s)", device.VerificationURIComplete)
	}
	fmt.Fprintln(s.out, ". Waiting for approval ...")

	if !device.Expiry.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, device.Expiry)
		defer cancel()
	}
	interval := defaultPollInterval
	if device.Interval > 0 {
		interval = time.Duration(device.Interval) * time.Second
	}
	return s.pollDeviceSeed(ctx, device.DeviceCode, interval)
}

// pollDeviceSeed writes the device code to <mount>/seed every interval. The
// engine returns 400 with authorization_pending until the operator approves,
// and with slow_down when the upstream requests a longer interval.
func (s *seeder) pollDeviceSeed(ctx context.Context, deviceCode string, interval time.Duration) (*seedResult, error) {
	for {
		if err := s.sleep(ctx, interval); err != nil {
			return nil, fmt.Errorf("waiting for the device authorization to be approved: %w", err)
		}

		result, err := s.writeSeed(ctx, map[string]interface{}{"device_code": deviceCode})
		switch {
		case err == nil:
			return result, nil
		case vaultErrorContains(err, "authorization_pending"):
			continue
		case vaultErrorContains(err, "slow_down"):
			interval += slowDownIncrement
			continue
		case vaultErrorContains(err, "access_denied"):
			return nil, &consentError{code: "access_denied", description: "the device authorization was denied"}
		case vaultErrorContains(err, "expired_token"):
			return nil, fmt.Errorf("the device code expired before it was approved; run the command again")
		default:
			return nil, fmt.Errorf("writing the device code to %s/seed: %w", s.mount, err)
		}
	}
}
