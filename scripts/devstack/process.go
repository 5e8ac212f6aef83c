package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopTimeout bounds how long a server may take to exit after SIGTERM before
// it gets SIGKILL.
const stopTimeout = 15 * time.Second

// process is one server process whose stdout and stderr are appended to a
// log file, so that output from every start of the same server stays in one
// place.
type process struct {
	name    string
	binary  string
	args    []string
	env     []string
	dir     string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// start launches the process in its own process group.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.cmd != nil {
		select {
		case <-p.exited:
			// The server exited on its own; end what is left of its group
			// before starting again.
			signalGroup(p.cmd.Process, syscall.SIGKILL)
		default:
			return fmt.Errorf("%s is already running", p.name)
		}
	}

	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open %s log: %w", p.name, err)
	}
	defer logFile.Close()

	cmd := exec.Command(p.binary, p.args...)
	cmd.Dir = p.dir
	cmd.Env = p.env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}

	exited := make(chan struct{})
	p.cmd = cmd
	p.exited = exited
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// running reports whether the process has been started and not yet exited.
func (p *process) running() bool {
	p.mu.Lock()
	exited := p.exited
	p.mu.Unlock()
	if exited == nil {
		return false
	}
	select {
	case <-exited:
		return false
	default:
		return true
	}
}

// pid returns the process id, or 0 when the process is not running.
func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// exitedEarly returns an error when the process is no longer running, with
// the tail of its log, so that a failed start explains itself.
func (p *process) exitedEarly() error {
	p.mu.Lock()
	exited, waitErr := p.exited, p.waitErr
	p.mu.Unlock()
	if exited == nil {
		return fmt.Errorf("%s is not started", p.name)
	}
	select {
	case <-exited:
		return fmt.Errorf("%s exited (%v); last lines of %s:\n%s",
			p.name, waitErr, p.logPath, tailFile(p.logPath, 20))
	default:
		return nil
	}
}

// stop sends SIGTERM to the process group and waits for the process to exit,
// sending SIGKILL after stopTimeout.
func (p *process) stop() error {
	return p.signalAndWait(syscall.SIGTERM, stopTimeout)
}

// kill sends SIGKILL to the process group and waits for the process to exit,
// which models a crash: the server gets no chance to flush or clean up.
func (p *process) kill() error {
	return p.signalAndWait(syscall.SIGKILL, stopTimeout)
}

func (p *process) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}

	signalGroup(cmd.Process, sig)
	select {
	case <-exited:
	case <-time.After(timeout):
		signalGroup(cmd.Process, syscall.SIGKILL)
		<-exited
	}
	// The leader has exited, but children such as Vault's plugin processes
	// may still be alive in the group.
	signalGroup(cmd.Process, syscall.SIGKILL)

	p.mu.Lock()
	p.cmd = nil
	p.exited = nil
	p.mu.Unlock()
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another
// program may take it before the server binds it; the server then fails to
// start with an error that names the address.
func FreePort() (int, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port, nil
}

// waitFor calls check every 200ms until it returns nil, the process exits or
// the context ends, and returns the last error.
func waitFor(ctx context.Context, p *process, what string, check func(context.Context) error) error {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if exitErr := p.exitedEarly(); exitErr != nil {
			return fmt.Errorf("wait for %s: %w", what, exitErr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last error: %v)", what, ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

// childEnv returns the current environment without variables of the given
// prefixes, plus extra. It keeps a developer's VAULT_ADDR or DSN from leaking
// into the servers and CLI commands started here.
func childEnv(dropPrefixes []string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		drop := false
		for _, prefix := range dropPrefixes {
			if strings.HasPrefix(kv, prefix) {
				drop = true
				break
			}
		}
		if !drop {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// tailFile returns the last n lines of a file, or a note when it cannot be
// read.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(log not readable: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// loopbackURL returns http://127.0.0.1:port.
func loopbackURL(port int) string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

// closeAll calls each close function in order and joins their errors.
func closeAll(closers ...func() error) error {
	var errs []error
	for _, closeFn := range closers {
		if closeFn == nil {
			continue
		}
		if err := closeFn(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
