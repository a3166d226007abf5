package bridge

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/internal/testenv"
	"gatewayd/internal/testproc"
	"gatewayd/internal/testproxy"
)

// kill -9 of the real gatewayd while messages are queued for the cloud, and
// again while the backlog drains: every message arrives upstream, in order.
func TestKill9GatewaydWhileQueued(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the gatewayd binary")
	}
	m := startMosquitto(t)
	p := testproxy.New(t, m.Addr())
	dir := t.TempDir()
	bin := filepath.Join(dir, "gatewayd")
	build := exec.Command("go", "build", "-o", bin, "gatewayd/cmd/gatewayd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := "127.0.0.1:" + strconv.Itoa(testproc.FreePort(t))
	confPath := filepath.Join(dir, "gatewayd.yaml")
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
`, filepath.Join(dir, "data"), addr, p.URL(), cloudUser, cloudPass)
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	up := cloudSubscriber(t, m, "upstream", "gw1/sensors/#")
	argv := []string{bin, "--config", confPath}
	if q := testenv.Emulator(); q != "" {
		// Built for the emulated architecture (make test-arm): run it
		// through the same qemu-user emulator as this test.
		argv = append([]string{q}, argv...)
	}
	// Killed and reaped at the end; its output is logged if the test failed.
	g := testproc.New(t, "gatewayd", addr, argv...)
	g.Start()
	// The bridge is up (its session and subscription exist) once its status
	// is online upstream.
	up.waitFor(t, 20*time.Second, "bridge online", has("gw1/sensors/gw1/status", "online"))

	n, outage := outageSize()
	p.Cut(true)
	pub := connect(t, client.Options{URL: "mqtt://" + addr, ClientID: "sensor", CleanStart: true})
	for i := 0; i < 10; i++ {
		publishSeq(t, pub, "sensors/seq", 1, i*n/10, n/10)
		time.Sleep(outage / 10)
	}
	ctx := testCtx(t, 10*time.Second)
	pub.Disconnect(ctx)
	g.Kill()
	g.Start()
	p.Restore()
	seq := func(ms []*client.Message) []*client.Message { return byTopic(ms, "gw1/sensors/seq") }
	up.waitFor(t, 60*time.Second, "some drained", func(ms []*client.Message) bool { return arrived(n / 4)(seq(ms)) })
	g.Kill()
	g.Start()
	got := up.waitFor(t, 120*time.Second, "all arrived", func(ms []*client.Message) bool { return arrived(n)(seq(ms)) })
	dups := checkSequence(t, seq(got), n)
	t.Logf("%d messages, %d repeated (QoS 1 redeliveries after kill -9)", n, dups)
}
