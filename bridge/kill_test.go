package bridge

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/internal/testenv"
)

// gatewaydProc is the real gatewayd binary run by the test.
type gatewaydProc struct {
	t      *testing.T
	bin    string
	conf   string
	addr   string
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	out    bytes.Buffer
}

func (g *gatewaydProc) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.Write(p)
}

func (g *gatewaydProc) start() {
	g.t.Helper()
	cmd := exec.Command(g.bin, "--config", g.conf)
	if q := testenv.Emulator(); q != "" {
		// Built for the emulated architecture (make test-arm): run it
		// through the same qemu-user emulator as this test.
		cmd = exec.Command(q, g.bin, "--config", g.conf)
	}
	cmd.Stdout, cmd.Stderr = g, g
	if err := cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	g.cmd, g.exited = cmd, exited
	deadline := time.Now().Add(testenv.Scale(20 * time.Second))
	for {
		c, err := net.Dial("tcp", g.addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			g.t.Fatalf("gatewayd exited:\n%s", g.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gatewayd not listening:\n%s", g.output())
		}
	}
}

func (g *gatewaydProc) output() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String()
}

// kill9 ends gatewayd with SIGKILL: no flush, no clean shutdown.
func (g *gatewaydProc) kill9() {
	g.cmd.Process.Signal(syscall.SIGKILL)
	<-g.exited
}

// kill -9 of the real gatewayd while messages are queued for the cloud, and
// again while the backlog drains: every message arrives upstream, in order.
func TestKill9GatewaydWhileQueued(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gatewayd binary")
	}
	m := startMosquitto(t)
	p := newProxy(t, m.Addr())
	dir := t.TempDir()
	bin := filepath.Join(dir, "gatewayd")
	build := exec.Command("go", "build", "-o", bin, "gatewayd/cmd/gatewayd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	g := &gatewaydProc{t: t, bin: bin, conf: filepath.Join(dir, "gatewayd.yaml"), addr: "127.0.0.1:" + strconv.Itoa(freePort(t))}
	conf := fmt.Sprintf(`gateway_id: gw1
data_dir: %s
log: {level: warn}
broker:
  listeners:
    - address: %s
bridges:
  - name: cloud
    url: %s
    username: %s
    password: %s
    keepalive: 2s
    backoff: {base: 50ms, cap: 300ms}
    topics:
      - {pattern: "#", direction: out, qos: 1, local_prefix: sensors/, remote_prefix: gw1/sensors/}
`, filepath.Join(dir, "data"), g.addr, p.URL(), cloudUser, cloudPass)
	if err := os.WriteFile(g.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	up := cloudSubscriber(t, m, "upstream", "gw1/sensors/#")
	g.start()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.exited
		if t.Failed() {
			t.Logf("gatewayd output:\n%s", g.output())
		}
	})
	// The bridge is up (its session and subscription exist) once its status
	// is online upstream.
	up.waitFor(t, 20*time.Second, "bridge online", has("gw1/sensors/gw1/status", "online"))

	n, outage := outageSize()
	p.cut(true)
	pub := connect(t, client.Options{URL: "mqtt://" + g.addr, ClientID: "sensor", CleanStart: true})
	for i := 0; i < 10; i++ {
		publishSeq(t, pub, "sensors/seq", 1, i*n/10, n/10)
		time.Sleep(outage / 10)
	}
	ctx := testCtx(t, 10*time.Second)
	pub.Disconnect(ctx)
	g.kill9()
	g.start()
	p.restore()
	seq := func(ms []*client.Message) []*client.Message { return byTopic(ms, "gw1/sensors/seq") }
	up.waitFor(t, 60*time.Second, "some drained", func(ms []*client.Message) bool { return arrived(n / 4)(seq(ms)) })
	g.kill9()
	g.start()
	got := up.waitFor(t, 120*time.Second, "all arrived", func(ms []*client.Message) bool { return arrived(n)(seq(ms)) })
	dups := checkSequence(t, seq(got), n)
	t.Logf("%d messages, %d repeated (QoS 1 redeliveries after kill -9)", n, dups)
}
