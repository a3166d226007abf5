package client

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"gatewayd/internal/testenv"
)

// mosquitto is a real mosquitto broker run by a test on a loopback port with
// its own configuration file.
type mosquitto struct {
	t      *testing.T
	dir    string
	port   int
	conf   string
	mu     sync.Mutex
	log    bytes.Buffer
	cmd    *exec.Cmd
	exited chan struct{}
}

func (m *mosquitto) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.Write(p)
}

func (m *mosquitto) Log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

// startMosquitto starts mosquitto with a plain listener on a free port and the
// extra configuration lines given (which may name files in m.dir).
func startMosquitto(t *testing.T, extra string) *mosquitto {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		t.Skip("mosquitto is not installed (apt-get install mosquitto)")
	}
	m := &mosquitto{t: t, dir: t.TempDir(), port: freePort(t)}
	// user: mosquitto started as root would otherwise switch to the
	// "mosquitto" user, which cannot read the test's files.
	me := "root"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	m.writeConf(fmt.Sprintf("user %s\nlistener %d 127.0.0.1\nallow_anonymous true\n", me, m.port) + extra)
	m.start()
	t.Cleanup(m.kill)
	return m
}

func (m *mosquitto) writeConf(conf string) {
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(conf), 0o600); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mosquitto) URL() string  { return "mqtt://127.0.0.1:" + strconv.Itoa(m.port) }
func (m *mosquitto) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

func (m *mosquitto) start() {
	m.t.Helper()
	cmd := exec.Command("mosquitto", "-c", m.conf, "-v")
	cmd.Stdout, cmd.Stderr = m, m
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	m.cmd, m.exited = cmd, exited
	m.waitListening(m.Addr())
}

// waitListening waits until addr accepts connections or mosquitto exits.
func (m *mosquitto) waitListening(addr string) {
	m.t.Helper()
	deadline := time.Now().Add(testenv.Scale(15 * time.Second))
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-m.exited:
			m.t.Fatalf("mosquitto exited:\n%s", m.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mosquitto not listening on %s:\n%s", addr, m.Log())
		}
	}
}

// stop ends mosquitto the way systemd would (SIGTERM), waiting for it.
func (m *mosquitto) stop() {
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
}

func (m *mosquitto) restart() {
	m.stop()
	m.start()
}

func (m *mosquitto) kill() {
	m.cmd.Process.Kill()
	<-m.exited
	if m.t.Failed() {
		m.t.Logf("mosquitto log:\n%s", m.Log())
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testCtx is a context bounding one step of a test, so that a broken
// implementation fails instead of hanging.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(20*time.Second))
	t.Cleanup(cancel)
	return ctx
}

// connect makes a client with opts and connects it; it is disconnected when
// the test ends.
func connect(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(10*time.Second))
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

// collector is a Handler that hands messages to a channel.
type collector chan *Message

func newCollector() collector { return make(collector, 1000) }

func (c collector) handle(m *Message) { c <- m }

func (c collector) next(t *testing.T) *Message {
	t.Helper()
	select {
	case m := <-c:
		return m
	case <-time.After(testenv.Scale(20 * time.Second)):
		t.Fatal("no message arrived")
		return nil
	}
}

// none checks that nothing arrives while the broker handles a round trip on
// probe (a later message on the same subscription would have come behind).
func (c collector) empty(t *testing.T) {
	t.Helper()
	select {
	case m := <-c:
		t.Fatalf("unexpected message %q on %s", m.Payload, m.Topic)
	default:
	}
}
