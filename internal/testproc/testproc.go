// Package testproc runs a server program for a test: it keeps what the
// program writes, waits until it accepts connections on its address, stops
// it the way systemd would (SIGTERM) or kills it, always reaps it, and shows
// its output when the test failed.
//
// Only tests import it. Its waits are stretched by testenv.Scale, so the same
// tests pass under qemu-user emulation (make test-arm).
package testproc

import (
	"bytes"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gatewayd/internal/testenv"
)

// ListenTimeout bounds the wait for a started program to accept connections
// (stretched by testenv.Scale).
const ListenTimeout = 20 * time.Second

// StopTimeout is how long Stop lets a program shut down after SIGTERM before
// it kills it (stretched by testenv.Scale).
const StopTimeout = 10 * time.Second

// Buffer is a bytes.Buffer that a program (or a logger) and the test may
// write and read at the same time.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Contains reports whether s was written.
func (b *Buffer) Contains(s string) bool { return strings.Contains(b.String(), s) }

// Process is a server program run by a test. Its standard output and error
// go to one Buffer, kept across restarts.
type Process struct {
	t    testing.TB
	name string
	argv []string
	addr string
	out  Buffer

	cmd     *exec.Cmd
	exited  chan struct{}
	cleanup bool
}

// New prepares argv (the program and its arguments) to run as a server that
// listens on addr ("host:port"). name names it in messages. Nothing runs
// before Start.
func New(t testing.TB, name, addr string, argv ...string) *Process {
	return &Process{t: t, name: name, argv: argv, addr: addr}
}

// Start runs the program and returns once addr accepts connections. The test
// fails if the program exits first or does not listen within ListenTimeout.
// When the test ends the program is killed and reaped, and its output logged
// if the test failed.
func (p *Process) Start() {
	p.t.Helper()
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited
	if !p.cleanup {
		p.cleanup = true
		p.t.Cleanup(func() {
			p.Kill()
			if p.t.Failed() {
				p.t.Logf("%s output:\n%s", p.name, p.Output())
			}
		})
	}
	p.WaitListening(p.addr)
}

// WaitListening waits until addr accepts connections: the program's own
// address or another listener it opens. The test fails if the program exits
// first or addr does not accept within ListenTimeout.
func (p *Process) WaitListening(addr string) {
	p.t.Helper()
	d := testenv.Scale(ListenTimeout)
	deadline := time.Now().Add(d)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-p.exited:
			p.t.Fatalf("%s exited:\n%s", p.name, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not listening on %s after %v:\n%s", p.name, addr, d, p.Output())
		}
	}
}

// Output returns what the program wrote so far, in all its runs.
func (p *Process) Output() string { return p.out.String() }

// Logged reports whether the program wrote s.
func (p *Process) Logged(s string) bool { return p.out.Contains(s) }

// Exited is closed once the program of the last Start has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Stop ends the program the way systemd would: SIGTERM, then SIGKILL if it
// has not exited within StopTimeout. It returns once the program is reaped.
func (p *Process) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(testenv.Scale(StopTimeout)):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill ends the program with SIGKILL (no clean shutdown) and reaps it.
func (p *Process) Kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// Restart stops the program (Stop) and starts it again (Start).
func (p *Process) Restart() {
	p.t.Helper()
	p.Stop()
	p.Start()
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
