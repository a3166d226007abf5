package metrics

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatewayd/bridge"
	"gatewayd/broker"
	"gatewayd/broker/state"
	"gatewayd/drivers"
)

// scrape fetches /metrics and returns each sample line's value by its name
// and labels, as written ("gatewayd_x_total{reason=\"a\"}").
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", l)
		}
		out[l[:i]] = v
	}
	return out
}

// publishQoS1 sends one retained QoS 1 PUBLISH (the store keeps it) over MQTT 3.1.1 and waits for PUBACK.
func publishQoS1(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	c.Write([]byte{0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 4, 'm', 't', 'r', 'x'})
	c.Write([]byte{0x33, 11, 0, 3, 'm', '/', 't', 0, 1, 'a', 'b', 'c', 'd'})
	buf := make([]byte, 8)
	if _, err := io.ReadFull(c, buf); err != nil { // CONNACK, PUBACK
		t.Fatal(err)
	}
	if buf[4] != 0x40 {
		t.Fatalf("got % x, want CONNACK then PUBACK", buf)
	}
}

func TestScrapeShowsBrokerStoreBridgeAndDeviceMetricsThatMove(t *testing.T) {
	store, err := state.OpenDurable(t.TempDir(), state.DurableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Name: "t", Address: "127.0.0.1:0"}}
	quiet := slog.New(slog.DiscardHandler)
	srv, err := broker.New(cfg, broker.Options{Store: store, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(context.Background()); store.Close() }()

	last := time.Now().Add(-90 * time.Second)
	m, err := Listen(Config{Address: "127.0.0.1:0"}, Sources{
		Version: "v1.2.3",
		Broker:  srv.Stats,
		Store:   store,
		Bridges: func() map[string]bridge.Stats {
			return map[string]bridge.Stats{"cloud": {State: "connected", QueuedMessages: 7, InflightOut: 5, InflightIn: 2, OldestQueued: 3 * time.Second, Dropped: map[string]uint64{"expired": 2}}}
		},
		Devices: func() []drivers.DeviceStats {
			return []drivers.DeviceStats{{Name: "porch", Driver: "bme280", Online: true, Reads: 10, Errors: 1, LastSuccess: last}}
		},
	}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { m.Serve(); close(served) }()
	defer func() { m.Shutdown(context.Background()); <-served }()
	addr := m.Addr().String()

	before := scrape(t, addr)
	for _, name := range []string{
		`gatewayd_build_info{version="v1.2.3"}`,
		"gatewayd_broker_clients_connected", "gatewayd_broker_received_bytes_total", "gatewayd_broker_sent_bytes_total",
		"gatewayd_broker_publish_received_total", `gatewayd_broker_publish_dropped_total{reason="queue_full"}`,
		"gatewayd_broker_queued_messages", "gatewayd_store_fsyncs_total", "gatewayd_store_written_bytes_total",
		`gatewayd_bridge_connected{bridge="cloud"}`, `gatewayd_bridge_queued_messages{bridge="cloud"}`,
		`gatewayd_bridge_dropped_messages_total{bridge="cloud",reason="expired"}`,
		`gatewayd_device_read_errors_total{device="porch",driver="bme280"}`,
		`gatewayd_device_last_success_age_seconds{device="porch",driver="bme280"}`,
		"go_goroutines", "process_resident_memory_bytes",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("no %s", name)
		}
	}
	if v := before[`gatewayd_bridge_queued_messages{bridge="cloud"}`]; v != 7 {
		t.Errorf("bridge queued %v, want 7", v)
	}
	if v := before[`gatewayd_bridge_inflight_messages{bridge="cloud",direction="out"}`]; v != 5 {
		t.Errorf("bridge in flight out %v, want 5", v)
	}
	if v := before[`gatewayd_bridge_inflight_messages{bridge="cloud",direction="in"}`]; v != 2 {
		t.Errorf("bridge in flight in %v, want 2", v)
	}
	if v := before[`gatewayd_device_last_success_age_seconds{device="porch",driver="bme280"}`]; v < 90 {
		t.Errorf("last success age %v, want at least 90", v)
	}

	publishQoS1(t, srv.Addrs()[0].String())
	after := scrape(t, addr)
	for _, name := range []string{"gatewayd_broker_received_bytes_total", "gatewayd_broker_publish_received_total",
		"gatewayd_store_fsyncs_total", "gatewayd_store_written_bytes_total"} {
		if after[name] <= before[name] {
			t.Errorf("%s did not move with a QoS 1 publish: %v then %v", name, before[name], after[name])
		}
	}
	// One QoS 1 PUBLISH with a 4-byte payload, and nothing at QoS 0 or 2.
	for name, delta := range map[string]float64{
		`gatewayd_broker_publish_messages_received_total{qos="0"}`: 0,
		`gatewayd_broker_publish_messages_received_total{qos="1"}`: 1,
		`gatewayd_broker_publish_messages_received_total{qos="2"}`: 0,
		`gatewayd_broker_publish_received_bytes_total{qos="0"}`:    0,
		`gatewayd_broker_publish_received_bytes_total{qos="1"}`:    4,
		`gatewayd_broker_publish_received_bytes_total{qos="2"}`:    0,
		`gatewayd_broker_publish_messages_sent_total{qos="1"}`:     0,
		`gatewayd_broker_publish_sent_bytes_total{qos="1"}`:        0,
	} {
		b, okb := before[name]
		a, oka := after[name]
		if !okb || !oka {
			t.Errorf("no %s", name)
		} else if a-b != delta {
			t.Errorf("%s moved by %v with one 4-byte QoS 1 publish, want %v", name, a-b, delta)
		}
	}
}

func TestEmptyAddressDisablesTheEndpoint(t *testing.T) {
	s, err := Listen(Config{}, Sources{}, nil)
	if s != nil || err != nil {
		t.Errorf("Listen with no address: %v, %v", s, err)
	}
}

func TestAddressInUseNamesTheKey(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = Listen(Config{Address: ln.Addr().String()}, Sources{}, nil)
	if err == nil || !strings.Contains(err.Error(), "metrics.address") {
		t.Errorf("got %v, want an error naming metrics.address", err)
	}
}
