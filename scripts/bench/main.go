// Command bench measures what the ci-tokens engine adds on top of Vault's
// own request path and the upstream's token endpoint. It starts the real
// Vault with the plugin and a real Ory Hydra on 127.0.0.1 (see
// scripts/devstack) and, in one run, measures at each concurrency level:
//
//	A  vault write ci-tokens/creds/deploy (client_credentials role)
//	B  a kv-v2 write of a payload as large as A's response data
//	C  the same client_credentials request sent straight to Hydra
//	D  A while ci-tokens/rotate-root is called every second
//
// It also mints a fixed number of tokens while it reads the plugin
// process's resident memory at several lease counts. It prints Markdown
// tables to stdout and writes the results as JSON.
//
// Run it with `make bench` or `go run ./scripts/bench` from the repository
// root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config holds the command-line flags.
type config struct {
	levels          []int
	duration        time.Duration
	rounds          int
	maxRequests     int
	warmup          time.Duration
	mints           int
	mintConcurrency int
	rotateEvery     time.Duration
	separateCores   bool
	maxOtherCores   float64
	levelAttempts   int
	vaultLogLevel   string
	out             string
	dir             string
	timeout         time.Duration

	// profileDir, when set, selects a plugin built with -tags pprof and
	// adds a profiling phase at the end of the run.
	profileDir         string
	profileConcurrency int
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	err = run(ctx, cfg)
	cancel()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var cfg config
	flags := flag.NewFlagSet("bench", flag.ContinueOnError)
	levels := flags.String("levels", "1,8,64,256", "comma-separated concurrency levels (closed-loop workers)")
	flags.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured time of each scenario at each level")
	flags.IntVar(&cfg.rounds, "rounds", 2, "rounds in which the scenarios of a level take turns, each measured for -duration/-rounds")
	flags.IntVar(&cfg.maxRequests, "requests", 0, "also end each scenario at each level after this many requests; 0 means no limit")
	flags.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured load before each measured run, at the same concurrency")
	flags.IntVar(&cfg.mints, "mints", 20000, "tokens minted in the memory phase before the plugin's peak RSS is read")
	flags.IntVar(&cfg.mintConcurrency, "mint-concurrency", 16, "concurrency of the memory phase")
	flags.DurationVar(&cfg.rotateEvery, "rotate-every", time.Second, "interval between rotate-root calls in scenario D")
	flags.BoolVar(&cfg.separateCores, "separate-cores", false, "pin Hydra to CPU 0 and Vault, the plugin and the benchmark to CPU 1, as if the upstream ran on another machine")
	flags.Float64Var(&cfg.maxOtherCores, "max-other-cores", 0.15, "CPU cores that other programs may use during a level before it is measured again")
	flags.IntVar(&cfg.levelAttempts, "level-attempts", 2, "times a level is measured at most when other programs disturb it")
	flags.StringVar(&cfg.vaultLogLevel, "vault-log-level", "info", "Vault's -log-level; debug adds a log line per mint")
	flags.StringVar(&cfg.out, "out", "bench/results.json", "path of the JSON results")
	flags.StringVar(&cfg.dir, "dir", "", "directory for the servers' files and logs, kept after the run (default: a temporary directory, removed)")
	flags.DurationVar(&cfg.timeout, "timeout", 20*time.Minute, "upper bound of the whole run")
	flags.StringVar(&cfg.profileDir, "profile", "", "after the scenarios, record CPU profiles of the plugin and Vault during scenario A, and the plugin's heap, into this directory")
	flags.IntVar(&cfg.profileConcurrency, "profile-concurrency", 64, "concurrency of scenario A while -profile records")
	if err := flags.Parse(args); err != nil {
		return config{}, err
	}
	if flags.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", flags.Args())
	}

	var err error
	cfg.levels, err = parseLevels(*levels)
	if err != nil {
		return config{}, err
	}
	switch {
	case cfg.duration <= 0:
		return config{}, fmt.Errorf("-duration: must be positive, got %s", cfg.duration)
	case cfg.rounds < 1 || cfg.duration/time.Duration(cfg.rounds) < minRoundDuration:
		return config{}, fmt.Errorf("-rounds: must be at least 1, with rounds of at least %s of -duration, got %d", minRoundDuration, cfg.rounds)
	case cfg.maxRequests < 0:
		return config{}, fmt.Errorf("-requests: must not be negative, got %d", cfg.maxRequests)
	case cfg.warmup < 0:
		return config{}, fmt.Errorf("-warmup: must not be negative, got %s", cfg.warmup)
	case cfg.mints < 0:
		return config{}, fmt.Errorf("-mints: must not be negative, got %d", cfg.mints)
	case cfg.mintConcurrency < 1:
		return config{}, fmt.Errorf("-mint-concurrency: must be at least 1, got %d", cfg.mintConcurrency)
	case cfg.maxOtherCores < 0:
		return config{}, fmt.Errorf("-max-other-cores: must not be negative, got %v", cfg.maxOtherCores)
	case cfg.levelAttempts < 1:
		return config{}, fmt.Errorf("-level-attempts: must be at least 1, got %d", cfg.levelAttempts)
	case cfg.rotateEvery <= 0:
		return config{}, fmt.Errorf("-rotate-every: must be positive, got %s", cfg.rotateEvery)
	case cfg.profileConcurrency < 1:
		return config{}, fmt.Errorf("-profile-concurrency: must be at least 1, got %d", cfg.profileConcurrency)
	case cfg.timeout <= 0:
		return config{}, fmt.Errorf("-timeout: must be positive, got %s", cfg.timeout)
	}
	return cfg, nil
}

// minRoundDuration is the shortest measured round that -duration and
// -rounds may give; shorter ones measure mostly the start and end of a run.
const minRoundDuration = 100 * time.Millisecond

// maxLevel bounds -levels, so that the load generator stays within the
// file descriptors and ports of one machine.
const maxLevel = 1024

func parseLevels(value string) ([]int, error) {
	var levels []int
	for _, part := range strings.Split(value, ",") {
		level, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || level < 1 || level > maxLevel {
			return nil, fmt.Errorf("-levels: %q is not a concurrency between 1 and %d", part, maxLevel)
		}
		levels = append(levels, level)
	}
	return levels, nil
}
