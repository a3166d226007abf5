package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"gatewayd/scripts/bench/internal/wire"
)

// broker is one of the brokers under test.
type broker struct {
	name    string
	version string
	// unavailable says why the broker cannot run; "" when it can.
	unavailable string
	// command returns the command line that runs the broker on addr for
	// workload w, with dir a fresh directory for its config and data.
	command func(dir, addr string, w *workload) ([]string, error)
}

// proc is a running broker.
type proc struct {
	cmd    *exec.Cmd
	pid    int
	dir    string
	logf   *os.File
	exited chan struct{}
	err    error
}

var (
	procsMu sync.Mutex
	procs   = map[*proc]bool{}
)

// killAll stops every broker still running; it is safe to call from a
// signal handler path and more than once.
func killAll() {
	procsMu.Lock()
	list := make([]*proc, 0, len(procs))
	for p := range procs {
		list = append(list, p)
	}
	procsMu.Unlock()
	for _, p := range list {
		p.stop()
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// start runs b in a fresh directory under root and waits until it completes
// an MQTT handshake.
func (b *broker) start(ctx context.Context, root string, w *workload) (*proc, string, error) {
	dir, err := os.MkdirTemp(root, b.name+"-")
	if err != nil {
		return nil, "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	argv, err := b.command(dir, addr, w)
	if err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(dir, "broker.log"))
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group, so stop can kill a wrapper shell's children too;
	// killed with the harness should it die without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, "", fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &proc{cmd: cmd, pid: cmd.Process.Pid, dir: dir, logf: logf, exited: make(chan struct{})}
	procsMu.Lock()
	procs[p] = true
	procsMu.Unlock()
	go func() { p.err = cmd.Wait(); close(p.exited) }()

	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := handshake(addr); err == nil {
			return p, addr, nil
		} else if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, "", fmt.Errorf("no MQTT handshake on %s within 15s: %v%s", addr, err, p.logTail())
		}
		select {
		case <-p.exited:
			p.stop()
			return nil, "", fmt.Errorf("exited at start (%v)%s", p.err, p.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func handshake(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(wire.AppendConnect(nil, "bench-probe", true)); err != nil {
		return err
	}
	first, body, _, err := wire.Reader{R: bufio.NewReader(c)}.Next()
	if err != nil {
		return err
	}
	if first>>4 != wire.CONNACK || len(body) < 2 || body[1] != 0 {
		return fmt.Errorf("bad CONNACK % x", body)
	}
	_, _ = c.Write(wire.Disconnect)
	return nil
}

// alive reports whether the broker is still running.
func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logf.Name())
	s := strings.TrimSpace(string(b))
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 3 {
		lines = lines[len(lines)-3:]
	}
	return ": " + strings.Join(lines, " | ")
}

// stop ends the broker: SIGTERM to its process group, SIGKILL after 3 s.
func (p *proc) stop() {
	procsMu.Lock()
	if !procs[p] {
		procsMu.Unlock()
		<-p.exited
		return
	}
	delete(procs, p)
	procsMu.Unlock()
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		<-p.exited
	}
	// Anything left in the group (there should be nothing).
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	p.logf.Close()
	_ = os.RemoveAll(filepath.Join(p.dir, "data"))
}

// goBuild builds pkg in module dir into out the way gatewayd's releases are
// built (packaging/release): static (no cgo, so no C library mapped into the
// process) and stripped, so that RSS figures are those of what ships.
func goBuild(ctx context.Context, dir, pkg, out string, env ...string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s: %v: %s", pkg, err, oneLine(strings.TrimSpace(string(b))))
	}
	return nil
}

func output(dir string, name string, args ...string) string {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	b, _ := cmd.CombinedOutput()
	return strings.TrimSpace(string(b))
}

// setupBrokers builds what must be built and returns the brokers in the
// order asked for. Unknown names are an error; a broker that cannot be built
// is returned with unavailable set.
func setupBrokers(ctx context.Context, names []string, repo, benchDir, binDir, gwArgs, gwRev string) ([]*broker, string, error) {
	var out []*broker
	var gwSrc string
	var fwdErr error
	fwdBuilt := false
	for _, n := range names {
		b := &broker{name: n}
		switch n {
		case "gatewayd":
			gwSrc = setupGatewayd(ctx, b, repo, binDir, gwArgs, gwRev)
		case "mosquitto":
			setupMosquitto(b)
		case "mochi":
			bin := filepath.Join(binDir, "mochi")
			if err := goBuild(ctx, benchDir, "./cmd/mochi", bin); err != nil {
				b.unavailable = err.Error()
				break
			}
			b.version = "mochi-mqtt/server " + moduleVersion(bin, "github.com/mochi-mqtt/server/v2")
			b.command = func(dir, addr string, w *workload) ([]string, error) {
				// Each outbound slot is reserved per connection: raised for
				// the flows so that mochi drops less, its default (8192) for
				// idle connections so that their memory is mochi's own.
				pending := "65536"
				if w.kind == idle {
					pending = "8192"
				}
				return []string{bin, "-addr", addr, "-writes-pending", pending}, nil
			}
		case "forwarder", "forwarder-epoll":
			// One binary for both; -epoll selects the single-thread loop.
			bin := filepath.Join(binDir, "forwarder")
			if fwdErr == nil && !fwdBuilt {
				fwdErr, fwdBuilt = goBuild(ctx, benchDir, "./cmd/forwarder", bin), true
			}
			if fwdErr != nil {
				b.unavailable = fwdErr.Error()
				break
			}
			args := []string{bin}
			b.version = "zero-logic TCP forwarder, goroutines per connection (scripts/bench/cmd/forwarder)"
			if n == "forwarder-epoll" {
				args = append(args, "-epoll")
				b.version = "zero-logic TCP forwarder, one epoll loop (scripts/bench/cmd/forwarder -epoll)"
			}
			b.command = func(dir, addr string, w *workload) ([]string, error) {
				return append(args[:len(args):len(args)], "-addr", addr), nil
			}
		default:
			return nil, "", fmt.Errorf("unknown broker %q (want gatewayd, mosquitto, mochi, forwarder, forwarder-epoll)", n)
		}
		out = append(out, b)
	}
	return out, gwSrc, nil
}

func moduleVersion(bin, module string) string {
	for _, line := range strings.Split(output("", "go", "version", "-m", bin), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "dep" && f[1] == module {
			return f[2]
		}
	}
	return "(version unknown)"
}

func setupMosquitto(b *broker) {
	path, err := exec.LookPath("mosquitto")
	if err != nil {
		path = "/usr/sbin/mosquitto"
		if _, serr := os.Stat(path); serr != nil {
			b.unavailable = "mosquitto not installed (apt-get install -y mosquitto)"
			return
		}
	}
	v := output("", path, "-h")
	if i := strings.Index(v, "\n"); i >= 0 {
		v = v[:i]
	}
	b.version = strings.TrimSpace(v)
	b.command = func(dir, addr string, w *workload) ([]string, error) {
		_, port, _ := net.SplitHostPort(addr)
		conf := filepath.Join(dir, "mosquitto.conf")
		text := strings.Join([]string{
			"listener " + port + " 127.0.0.1",
			"allow_anonymous true",
			"persistence false",
			"max_queued_messages 0",
			"max_queued_bytes 0",
			"max_inflight_messages 0",
			"max_connections -1",
			"sys_interval 0",
			"set_tcp_nodelay true",
			"log_dest stderr",
			"log_type error",
			"log_type warning",
			"",
		}, "\n")
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		// exec keeps the PID: the shell becomes mosquitto with the raised limit.
		return []string{"/bin/sh", "-c", `ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" -c "$1"`, path, conf}, nil
	}
}

func setupGatewayd(ctx context.Context, b *broker, repo, binDir, gwArgs, rev string) (src string) {
	src = filepath.Join(binDir, "gatewayd-src")
	desc, err := snapshot(ctx, repo, rev, src)
	if err != nil {
		b.unavailable = "cannot copy the sources: " + err.Error()
		return ""
	}
	if _, err := os.Stat(filepath.Join(src, "cmd", "gatewayd")); err != nil {
		b.unavailable = "cmd/gatewayd does not exist yet"
		return ""
	}
	bin := filepath.Join(binDir, "gatewayd")
	if err := goBuild(ctx, src, "./cmd/gatewayd", bin); err != nil {
		b.unavailable = "build failed: " + err.Error()
		return ""
	}
	keys := limitKeys(src)
	b.version = "gatewayd, " + desc
	if len(keys) > 0 {
		b.version += "; limits lifted to 0 (none): " + strings.Join(keys, ", ")
	}
	b.command = func(dir, addr string, w *workload) ([]string, error) {
		data := filepath.Join(dir, "data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "gatewayd.yaml")
		if err := os.WriteFile(conf, []byte(gatewaydConfig(data, addr, keys)), 0o644); err != nil {
			return nil, err
		}
		argv := []string{bin}
		for _, a := range strings.Fields(gwArgs) {
			argv = append(argv, strings.ReplaceAll(a, "{config}", conf))
		}
		return argv, nil
	}
	return src
}

// armBinarySize builds the stripped linux/arm GOARM=6 gatewayd binary and
// returns its size.
func armBinarySize(ctx context.Context, src, binDir string) (int64, error) {
	if src == "" {
		return 0, errors.New("gatewayd not built")
	}
	if _, err := os.Stat(filepath.Join(src, "cmd", "gatewayd")); err != nil {
		return 0, errors.New("cmd/gatewayd does not exist yet")
	}
	out := filepath.Join(binDir, "gatewayd-armv6")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/gatewayd")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm", "GOARM=6")
	if b, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("build: %v: %s", err, oneLine(strings.TrimSpace(string(b))))
	}
	st, err := os.Stat(out)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// isForwarder is true for the zero-logic forwarders, the machine's ceiling.
func isForwarder(name string) bool { return name == "forwarder" || name == "forwarder-epoll" }

// forwarders are the ceiling brokers, in the order the report shows them.
var forwarders = []string{"forwarder", "forwarder-epoll"}
