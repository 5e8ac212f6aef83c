# Targets need only Go (and a C compiler for Hydra's SQLite driver). The
# Vault and Hydra binaries for the demo and the end-to-end tests are built
# once into ${CI_TOKENS_CACHE:-$HOME/.cache/ci-tokens}/bin; see
# scripts/build-tools.sh.

GO ?= go
PLUGIN := vault-plugin-secrets-ci-tokens
VERSION ?= v0.1.0
LDFLAGS := -X github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend.Version=$(VERSION)
GOFUMPT_VERSION ?= v0.12.0

.PHONY: build tools test test-unit test-e2e demo dev bench fmt vet clean

## build: build the plugin into bin/ with VERSION stamped in
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/$(PLUGIN) ./cmd/$(PLUGIN)

## tools: build the cached Vault and Hydra binaries when missing
tools:
	scripts/build-tools.sh

## test: unit tests, then end-to-end tests against real Vault and Hydra
test: test-unit test-e2e

## test-unit: the engine's unit tests with the race detector
test-unit:
	$(GO) test -race -count=1 -short ./backend/... ./cmd/...

## test-e2e: tests that start Vault and Hydra on 127.0.0.1 (they skip under -short);
## one package at a time, so that their servers do not compete for two cores
test-e2e: tools
	$(GO) test -p 1 -count=1 -timeout 40m ./scripts/... ./cmd/... ./bootstrap/...

## demo: walk through the engine against real servers, then stop them
demo: tools
	$(GO) run ./scripts/demo

## dev: start the configured stack and keep it running until Ctrl-C
dev: tools
	$(GO) run ./scripts/dev $(DEV_FLAGS)

## bench: run the benchmark against real servers (flags in BENCH_FLAGS)
bench: tools
	$(GO) run ./scripts/bench $(BENCH_FLAGS)

## fmt: format the Go code with gofumpt
fmt:
	$(GO) run mvdan.cc/gofumpt@$(GOFUMPT_VERSION) -l -w .

## vet: run go vet on the plugin module
vet:
	$(GO) vet ./...

## clean: remove build outputs (the tools cache stays)
clean:
	rm -rf bin
