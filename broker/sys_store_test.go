package broker

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
	"gatewayd/internal/testproc"
)

// sysValue reads $SYS publishes from c until topic has a value for which ok
// is true, and returns it.
func sysValue(t *testing.T, c *rawClient, topic string, ok func(string) bool) string {
	t.Helper()
	for {
		p := c.nextPublish()
		if string(p.Topic) == topic && ok(string(p.Payload)) {
			return string(p.Payload)
		}
	}
}

// TestSysStoreDamagedAndWear: a broker started on a durable store whose log
// was overwritten with garbage logs an error, publishes
// $SYS/broker/store/damaged 1 with a reason, and its bytes/written rises once
// QoS 1 messages are stored for a persistent session.
func TestSysStoreDamagedAndWear(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	d, err := state.OpenDurable(dir, state.DurableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "log-*"))
	if len(logs) == 0 {
		logs = []string{filepath.Join(dir, "log-0000000000000001")}
	}
	for _, f := range logs {
		if err := os.WriteFile(f, bytes.Repeat([]byte("not a store "), 100), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d, err = state.OpenDurable(dir, state.DurableOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var logBuf testproc.Buffer // safe for the logger and the test to share
	logger := slog.New(slog.NewTextHandler(&logBuf, nil))
	_, addr := startServer(t, func(c *Config) { c.SysInterval = 50 * time.Millisecond }, Options{Store: d, Logger: logger})
	if l := logBuf.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "damaged") {
		t.Errorf("no error logged at start for the damaged store; log:\n%s", l)
	}

	sys := dialRaw(t, addr, packet.V311)
	sys.mustConnect("sys", true)
	sys.subscribe(1, "$SYS/broker/store/#", 0)
	always := func(string) bool { return true }
	if v := sysValue(t, sys, "$SYS/broker/store/damaged", always); v != "1" {
		t.Fatalf("$SYS/broker/store/damaged %q, want 1", v)
	}
	if why := sysValue(t, sys, "$SYS/broker/store/damaged/reason", always); why == "" {
		t.Fatal("empty damaged/reason")
	}
	before, err := strconv.ParseUint(sysValue(t, sys, "$SYS/broker/store/bytes/written", always), 10, 64)
	if err != nil {
		t.Fatal(err)
	}

	persistentSubscriber(t, addr, "durable", "t")
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	for id := uint16(1); id <= 5; id++ {
		pub.publish("t", 1, false, id, "kept on the card")
		pub.nextAck(packet.PUBACK)
	}
	sysValue(t, sys, "$SYS/broker/store/bytes/written", func(v string) bool {
		n, err := strconv.ParseUint(v, 10, 64)
		return err == nil && n > before
	})
	sysValue(t, sys, "$SYS/broker/store/messages/stored", func(v string) bool { return v != "0" })
	sysValue(t, sys, "$SYS/broker/store/bytes/per message", func(v string) bool {
		f, err := strconv.ParseFloat(v, 64)
		return err == nil && f > 0
	})
	for _, topic := range []string{"$SYS/broker/store/fsyncs", "$SYS/broker/store/write/errors", "$SYS/broker/store/quota/rejects"} {
		sysValue(t, sys, topic, always)
	}
}
