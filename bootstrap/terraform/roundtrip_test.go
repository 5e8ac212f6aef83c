// Package terraform_test checks that what the module writes to the engine
// reads back unchanged, which is what makes a second terraform apply plan no
// changes.
package terraform_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// terraformVersion is the version that scripts/tools/terraform builds.
const terraformVersion = "v1.11.4"

// moduleInputs are the inputs of the round trip, in terraform.tfvars.json
// form; the issuer and client ID are filled in from the stack.
const moduleInputs = `{
  "plugin": {"version": "v0.1.0", "sha256": "%s"},
  "upstream": {
    "issuer": "%s",
    "client_id": "%s",
    "client_auth_method": "client_secret_basic",
    "tls_min_version": "tls12",
    "request_timeout": 20,
    "default_expires_in": 300,
    "rotation_period": 86400
  },
  "roles": {
    "deploy": {"strategy": "client_credentials", "scopes": ["deploy:read"], "audience": ["https://deploy.example.test"], "ttl": 600, "max_ttl": 900},
    "defaults-only": {}
  }
}`

// TestModulePayloadsReadBackUnchanged renders the module's config and role
// payloads with Terraform itself, writes them to the engine and reads them
// back the way vault_generic_endpoint with ignore_absent_fields does: every
// written field must read back equal, or the next plan shows a change.
func TestModulePayloadsReadBackUnchanged(t *testing.T) {
	terraform := terraformBinary(t)
	stack := devstack.UpForTest(t, devstack.Options{Until: devstack.StageMounted})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	inputs := fmt.Sprintf(moduleInputs, stack.Plugin.SHA256, stack.Hydra.PublicURL, stack.EngineClient.ID)
	payloads := renderPayloads(t, terraform, inputs)

	vault := stack.Vault.Client
	paths := map[string]map[string]interface{}{devstack.MountPath + "/config": payloads.Config}
	for name, role := range payloads.Roles {
		paths[devstack.MountPath+"/roles/"+name] = role
	}
	for path, written := range paths {
		t.Run(path, func(t *testing.T) {
			if _, err := vault.Logical().WriteWithContext(ctx, path, written); err != nil {
				t.Fatalf("write %s: %v", path, err)
			}
			read, err := vault.Logical().ReadWithContext(ctx, path)
			if err != nil || read == nil {
				t.Fatalf("read %s: %v (nil response: %t)", path, err, read == nil)
			}
			for field, want := range written {
				got, ok := read.Data[field]
				if !ok {
					t.Errorf("field %s: written %s, absent on read", field, jsonText(t, want))
					continue
				}
				if jsonText(t, got) != jsonText(t, want) {
					t.Errorf("field %s: read %s, written %s", field, jsonText(t, got), jsonText(t, want))
				}
			}
		})
	}
}

// modulePayloads are the module's locals config_fields and role_fields.
type modulePayloads struct {
	Config map[string]interface{}            `json:"config"`
	Roles  map[string]map[string]interface{} `json:"roles"`
}

// renderPayloads evaluates the module's variables and locals with inputs
// in terraform console. Only variables.tf and the locals block are copied,
// so no provider is needed.
func renderPayloads(t *testing.T, terraform, inputs string) modulePayloads {
	t.Helper()
	dir := t.TempDir()
	variables, err := os.ReadFile("variables.tf")
	if err != nil {
		t.Fatalf("read variables.tf: %v", err)
	}
	writeFile(t, filepath.Join(dir, "variables.tf"), string(variables))
	writeFile(t, filepath.Join(dir, "locals.tf"), localsBlock(t))
	writeFile(t, filepath.Join(dir, "terraform.tfvars.json"), inputs)

	cmd := exec.Command(terraform, "console")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE=/dev/null", "TF_IN_AUTOMATION=1", "CHECKPOINT_DISABLE=1")
	cmd.Stdin = strings.NewReader("jsonencode({ config = local.config_fields, roles = local.role_fields })\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("terraform console: %v\n%s", err, out)
	}

	// The console prints the JSON document as a quoted string.
	var document string
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &document); err != nil {
		t.Fatalf("terraform console output is not a quoted string: %v\n%s", err, out)
	}
	var payloads modulePayloads
	if err := json.Unmarshal([]byte(document), &payloads); err != nil {
		t.Fatalf("payloads are not JSON: %v\n%s", err, document)
	}
	if len(payloads.Config) == 0 || len(payloads.Roles) != 2 {
		t.Fatalf("payloads: got %d config fields and %d roles, want some and 2", len(payloads.Config), len(payloads.Roles))
	}
	return payloads
}

// localsBlock returns the locals block of main.tf.
func localsBlock(t *testing.T) string {
	t.Helper()
	main, err := os.ReadFile("main.tf")
	if err != nil {
		t.Fatalf("read main.tf: %v", err)
	}
	text := string(main)
	start := strings.Index(text, "locals {")
	end := strings.Index(text[max(start, 0):], "\n}\n")
	if start < 0 || end < 0 {
		t.Fatalf("main.tf has no top-level locals block")
	}
	return text[start : start+end+3]
}

// terraformBinary returns the Terraform CLI that scripts/tools/terraform
// builds into the tools cache, and skips the test when it is not there.
func terraformBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real Vault and Hydra servers")
	}
	cache, err := devstack.CacheDir()
	if err != nil {
		t.Fatalf("tools cache: %v", err)
	}
	path := filepath.Join(cache, "bin", "terraform-"+terraformVersion)
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no Terraform CLI at %s; build it with: cd scripts/tools/terraform && go build -o %s github.com/hashicorp/terraform", path, path)
	}
	return path
}

func jsonText(t *testing.T, value interface{}) string {
	t.Helper()
	// Decode and encode again so that json.Number and float64 compare equal.
	raw, err := json.Marshal(value)
	if err != nil {
		t.Fatalf("marshal %v: %v", value, err)
	}
	var normalized interface{}
	if err := json.Unmarshal(raw, &normalized); err != nil {
		t.Fatalf("unmarshal %s: %v", raw, err)
	}
	out, err := json.Marshal(normalized)
	if err != nil {
		t.Fatalf("marshal %v: %v", normalized, err)
	}
	return string(out)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
