package metrics

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"gatewayd/bridge"
	"gatewayd/broker"
	"gatewayd/broker/state"
	"gatewayd/drivers"
	"gatewayd/internal/testenv"
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

// startBroker starts a broker on loopback with a durable store in a
// temporary directory; both stop when the test ends.
func startBroker(t *testing.T) (*broker.Server, *state.Durable) {
	t.Helper()
	store, err := state.OpenDurable(t.TempDir(), state.DurableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Name: "t", Address: "127.0.0.1:0"}}
	srv, err := broker.New(cfg, broker.Options{Store: store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()); store.Close() })
	return srv, store
}

// serveMetrics serves /metrics for src on a free loopback port until the
// test ends.
func serveMetrics(t *testing.T, src Sources) *Server {
	t.Helper()
	m, err := Listen(Config{Address: "127.0.0.1:0"}, src, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { m.Serve(); close(served) }()
	t.Cleanup(func() { m.Shutdown(context.Background()); <-served })
	return m
}

func TestScrapeShowsBrokerStoreBridgeAndDeviceMetricsThatMove(t *testing.T) {
	srv, store := startBroker(t)

	last := time.Now().Add(-90 * time.Second)
	m := serveMetrics(t, Sources{
		Version: "v1.2.3",
		Broker:  srv.Stats,
		Store:   store,
		Bridges: func() map[string]bridge.Stats {
			return map[string]bridge.Stats{"cloud": {State: "connected", QueuedMessages: 7, InflightOut: 5, InflightIn: 2, OldestQueued: 3 * time.Second, Dropped: map[string]uint64{"expired": 2}}}
		},
		Devices: func() []drivers.DeviceStats {
			return []drivers.DeviceStats{{Name: "porch", Driver: "bme280", Online: true, Reads: 10, Errors: 1, LastSuccess: last}}
		},
	})
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
	// One client connected (its CONNACK came back) and sent one QoS 1
	// PUBLISH with a 4-byte payload, and nothing at QoS 0 or 2.
	for name, delta := range map[string]float64{
		"gatewayd_broker_connects_total":                           1,
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

// wantFamilies are gatewayd's metric families: name, type, HELP text and
// label names. Dashboards and alerts depend on all four.
var wantFamilies = []struct{ name, typ, help, labels string }{
	{"gatewayd_build_info", "gauge", "gatewayd's version; always 1.", "version"},
	{"gatewayd_broker_uptime_seconds", "gauge", "Seconds since the broker started.", ""},
	{"gatewayd_broker_clients_connected", "gauge", "Clients connected now.", ""},
	{"gatewayd_broker_sessions_disconnected", "gauge", "Persistent sessions without a connection.", ""},
	{"gatewayd_broker_clients_maximum", "gauge", "Most clients connected at once.", ""},
	{"gatewayd_broker_connects_total", "counter", "Connections accepted (CONNACK sent).", ""},
	{"gatewayd_broker_disconnects_total", "counter", "Accepted connections that ended, takeovers included.", ""},
	{"gatewayd_broker_packets_received_total", "counter", "MQTT packets received, of any type.", ""},
	{"gatewayd_broker_packets_sent_total", "counter", "MQTT packets sent, of any type.", ""},
	{"gatewayd_broker_received_bytes_total", "counter", "Bytes received from clients.", ""},
	{"gatewayd_broker_sent_bytes_total", "counter", "Bytes sent to clients.", ""},
	{"gatewayd_broker_publish_received_total", "counter", "PUBLISH packets received.", ""},
	{"gatewayd_broker_publish_sent_total", "counter", "PUBLISH packets sent.", ""},
	{"gatewayd_broker_publish_messages_received_total", "counter", "PUBLISH packets received, by QoS.", "qos"},
	{"gatewayd_broker_publish_messages_sent_total", "counter", "PUBLISH packets sent, by the QoS delivered at.", "qos"},
	{"gatewayd_broker_publish_received_bytes_total", "counter", "Payload bytes of the PUBLISH packets received, by QoS.", "qos"},
	{"gatewayd_broker_publish_sent_bytes_total", "counter", "Payload bytes of the PUBLISH packets sent, by QoS.", "qos"},
	{"gatewayd_broker_publish_dropped_total", "counter", "Messages dropped, by reason.", "reason"},
	{"gatewayd_broker_subscriptions", "gauge", "Subscriptions held.", ""},
	{"gatewayd_broker_retained_messages", "gauge", "Retained messages held.", ""},
	{"gatewayd_broker_queued_messages", "gauge", "QoS 1 and 2 messages queued or in flight to clients.", ""},
	{"gatewayd_broker_connections_refused_total", "counter", "Connections refused, by reason.", "reason"},
	{"gatewayd_broker_protocol_errors_total", "counter", "Connections closed for a protocol error.", ""},
	{"gatewayd_broker_store_failures_total", "counter", "Store commits that failed; their messages were refused.", ""},
	{"gatewayd_broker_acl_denied_total", "counter", "Operations refused by the ACL, by operation.", "op"},
	{"gatewayd_store_fsyncs_total", "counter", "fsync and fdatasync calls of the store.", ""},
	{"gatewayd_store_written_bytes_total", "counter", "Bytes the store wrote.", ""},
	{"gatewayd_store_write_errors_total", "counter", "Failed store writes or fsyncs.", ""},
	{"gatewayd_store_messages_stored_total", "counter", "Messages made durable.", ""},
	{"gatewayd_store_live_bytes", "gauge", "Live data in the store (what store.max_bytes limits).", ""},
	{"gatewayd_store_disk_bytes", "gauge", "Size of the store's files.", ""},
	{"gatewayd_store_damaged", "gauge", "1 when the store found at start-up was damaged (moved aside, or its newest log cut at the damage).", ""},
	{"gatewayd_bridge_connected", "gauge", "1 while the bridge is connected to its cloud broker.", "bridge"},
	{"gatewayd_bridge_queued_messages", "gauge", "Messages waiting for the cloud.", "bridge"},
	{"gatewayd_bridge_queued_bytes", "gauge", "Bytes of the messages waiting for the cloud.", "bridge"},
	{"gatewayd_bridge_oldest_queued_age_seconds", "gauge", "Age of the oldest message waiting for the cloud.", "bridge"},
	{"gatewayd_bridge_sent_messages_total", "counter", "Messages the cloud acknowledged.", "bridge"},
	{"gatewayd_bridge_inflight_messages", "gauge", "Messages in the bridge's hands, by direction: out, sent to the cloud and not yet acknowledged by it; in, handed to the local broker and not yet stored.", "bridge,direction"},
	{"gatewayd_bridge_received_messages_total", "counter", "Messages from the cloud stored by the local broker.", "bridge"},
	{"gatewayd_bridge_dropped_messages_total", "counter", "Messages dropped by policy, by reason.", "bridge,reason"},
	{"gatewayd_bridge_rejected_messages_total", "counter", "Messages refused, by reason.", "bridge,reason"},
	{"gatewayd_bridge_reconnects_total", "counter", "Cloud connections after the first.", "bridge"},
	{"gatewayd_device_online", "gauge", "1 while the device answers.", "device,driver"},
	{"gatewayd_device_reads_total", "counter", "Successful reads (or readings, or commands applied).", "device,driver"},
	{"gatewayd_device_read_errors_total", "counter", "Failed opens, reads and commands.", "device,driver"},
	{"gatewayd_device_last_success_age_seconds", "gauge", "Seconds since the last successful read.", "device,driver"},
}

// get fetches /metrics with the given Accept-Encoding, leaving the body as
// served.
func get(t *testing.T, addr, acceptEncoding string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", acceptEncoding)
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	return resp, body
}

// labelsOf returns a sample's labels as a map.
func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// value returns a gauge's or counter's value.
func value(mf *dto.MetricFamily, m *dto.Metric) float64 {
	if mf.GetType() == dto.MetricType_COUNTER {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func TestScrapeParsesWithPrometheusTextParser(t *testing.T) {
	srv, store := startBroker(t)
	publishQoS1(t, srv.Addrs()[0].String())

	// Names a configuration may hold: the text format must escape the quote,
	// the backslash and the newline, and keep UTF-8 as it is.
	odd := "site \"A\" \\ north\nwing ü"
	aMinuteAgo := time.Now().Add(-time.Minute)
	m := serveMetrics(t, Sources{
		Version: "v1.2.3",
		Broker:  srv.Stats,
		Store:   store,
		Bridges: func() map[string]bridge.Stats {
			return map[string]bridge.Stats{
				"cloud": {State: "connected", QueuedMessages: 7, QueuedBytes: 700, InflightOut: 5, InflightIn: 2, Sent: 40, Received: 9, Reconnects: 3,
					Dropped: map[string]uint64{"expired": 2, "queue_full": 4}, Rejected: map[string]uint64{"too_large": 1}},
				odd: {State: "connecting", QueuedMessages: 11, OldestQueued: 1500 * time.Millisecond},
			}
		},
		Devices: func() []drivers.DeviceStats {
			return []drivers.DeviceStats{
				{Name: "porch", Driver: "bme280", Online: true, Reads: 10, Errors: 1, LastSuccess: aMinuteAgo},
				{Name: odd, Driver: "ds18b20", Reads: 3, Errors: 8},
			}
		},
	})

	resp, plain := get(t, m.Addr().String(), "identity")
	if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeTextPlain {
		t.Errorf("Content-Type %q is not the text format", resp.Header.Get("Content-Type"))
	}
	if resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("Content-Encoding %q for a scraper that does not accept gzip", resp.Header.Get("Content-Encoding"))
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(plain))
	if err != nil {
		t.Fatalf("the scrape is not valid text exposition: %v\n%s", err, plain)
	}

	// Prometheus scrapes with gzip: the same families come back compressed.
	resp, zipped := get(t, m.Addr().String(), "gzip")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("Content-Encoding %q, want gzip", resp.Header.Get("Content-Encoding"))
	} else {
		zr, err := gzip.NewReader(bytes.NewReader(zipped))
		if err != nil {
			t.Fatal(err)
		}
		unzipped, err := p.TextToMetricFamilies(zr)
		if err != nil {
			t.Fatalf("the gzipped scrape is not valid text exposition: %v", err)
		}
		for name := range fams {
			if _, ok := unzipped[name]; !ok {
				t.Errorf("gzipped scrape has no %s", name)
			}
		}
	}

	// Every family is typed (no untyped samples), gatewayd's with their
	// exact type, HELP and label names.
	for name, mf := range fams {
		if mf.GetType() == dto.MetricType_UNTYPED {
			t.Errorf("%s has no TYPE", name)
		}
	}
	seen := map[string]bool{}
	for _, w := range wantFamilies {
		seen[w.name] = true
		mf, ok := fams[w.name]
		if !ok {
			t.Errorf("no family %s", w.name)
			continue
		}
		if got := strings.ToLower(mf.GetType().String()); got != w.typ {
			t.Errorf("%s is a %s, want %s", w.name, got, w.typ)
		}
		if mf.GetHelp() != w.help {
			t.Errorf("%s HELP %q, want %q", w.name, mf.GetHelp(), w.help)
		}
		for _, s := range mf.GetMetric() {
			var names []string
			for _, l := range s.GetLabel() {
				names = append(names, l.GetName())
			}
			if got := strings.Join(names, ","); got != w.labels {
				t.Errorf("%s sample with labels %q, want %q", w.name, got, w.labels)
			}
		}
	}
	for name := range fams {
		if strings.HasPrefix(name, "gatewayd_") && !seen[name] {
			t.Errorf("unexpected family %s", name)
		}
	}
	for name, typ := range map[string]dto.MetricType{
		"go_goroutines":                 dto.MetricType_GAUGE,
		"go_gc_duration_seconds":        dto.MetricType_SUMMARY,
		"go_memstats_heap_inuse_bytes":  dto.MetricType_GAUGE,
		"process_cpu_seconds_total":     dto.MetricType_COUNTER,
		"process_resident_memory_bytes": dto.MetricType_GAUGE,
		"process_open_fds":              dto.MetricType_GAUGE,
		"process_start_time_seconds":    dto.MetricType_GAUGE,
	} {
		if mf, ok := fams[name]; !ok {
			t.Errorf("no family %s", name)
		} else if mf.GetType() != typ {
			t.Errorf("%s is a %s, want %s", name, mf.GetType(), typ)
		}
	}
	// qemu-user (make test-arm) emulates /proc/self/stat with the memory
	// fields zero, so only a native run can see the process's RSS.
	if mf := fams["process_resident_memory_bytes"]; mf != nil && !testenv.Emulated() && mf.GetMetric()[0].GetGauge().GetValue() <= 0 {
		t.Errorf("process_resident_memory_bytes is %v", mf.GetMetric()[0].GetGauge().GetValue())
	}

	// The labelled samples, each exactly once with its value.
	type key struct{ family, labels string }
	samples := map[key]float64{}
	for name, mf := range fams {
		if !strings.HasPrefix(name, "gatewayd_") {
			continue
		}
		for _, s := range mf.GetMetric() {
			k := key{name, fmt.Sprint(labelsOf(s))}
			if _, dup := samples[k]; dup {
				t.Errorf("%s%s twice", k.family, k.labels)
			}
			samples[k] = value(mf, s)
		}
	}
	l := func(kv ...string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return fmt.Sprint(m)
	}
	want := map[key]float64{
		{"gatewayd_build_info", l("version", "v1.2.3")}:                                          1,
		{"gatewayd_broker_publish_messages_received_total", l("qos", "0")}:                       0,
		{"gatewayd_broker_publish_messages_received_total", l("qos", "1")}:                       1,
		{"gatewayd_broker_publish_messages_received_total", l("qos", "2")}:                       0,
		{"gatewayd_broker_publish_received_bytes_total", l("qos", "1")}:                          4,
		{"gatewayd_broker_publish_dropped_total", l("reason", "slow_consumer")}:                  0,
		{"gatewayd_broker_connections_refused_total", l("reason", "auth")}:                       0,
		{"gatewayd_broker_acl_denied_total", l("op", "subscribe")}:                               0,
		{"gatewayd_store_messages_stored_total", l()}:                                            1,
		{"gatewayd_store_damaged", l()}:                                                          0,
		{"gatewayd_bridge_connected", l("bridge", "cloud")}:                                      1,
		{"gatewayd_bridge_connected", l("bridge", odd)}:                                          0,
		{"gatewayd_bridge_queued_messages", l("bridge", "cloud")}:                                7,
		{"gatewayd_bridge_queued_messages", l("bridge", odd)}:                                    11,
		{"gatewayd_bridge_queued_bytes", l("bridge", "cloud")}:                                   700,
		{"gatewayd_bridge_oldest_queued_age_seconds", l("bridge", odd)}:                          1.5,
		{"gatewayd_bridge_inflight_messages", l("bridge", "cloud", "direction", "out")}:          5,
		{"gatewayd_bridge_inflight_messages", l("bridge", "cloud", "direction", "in")}:           2,
		{"gatewayd_bridge_sent_messages_total", l("bridge", "cloud")}:                            40,
		{"gatewayd_bridge_received_messages_total", l("bridge", "cloud")}:                        9,
		{"gatewayd_bridge_reconnects_total", l("bridge", "cloud")}:                               3,
		{"gatewayd_bridge_dropped_messages_total", l("bridge", "cloud", "reason", "expired")}:    2,
		{"gatewayd_bridge_dropped_messages_total", l("bridge", "cloud", "reason", "queue_full")}: 4,
		{"gatewayd_bridge_rejected_messages_total", l("bridge", "cloud", "reason", "too_large")}: 1,
		{"gatewayd_device_online", l("device", "porch", "driver", "bme280")}:                     1,
		{"gatewayd_device_online", l("device", odd, "driver", "ds18b20")}:                        0,
		{"gatewayd_device_reads_total", l("device", odd, "driver", "ds18b20")}:                   3,
		{"gatewayd_device_read_errors_total", l("device", odd, "driver", "ds18b20")}:             8,
		{"gatewayd_device_read_errors_total", l("device", "porch", "driver", "bme280")}:          1,
	}
	for k, v := range want {
		got, ok := samples[k]
		if !ok {
			t.Errorf("no sample %s%s", k.family, k.labels)
		} else if got != v {
			t.Errorf("%s%s = %v, want %v", k.family, k.labels, got, v)
		}
	}
	// A device that never answered has no age; the other's is a minute.
	if _, ok := samples[key{"gatewayd_device_last_success_age_seconds", l("device", odd, "driver", "ds18b20")}]; ok {
		t.Errorf("a device that never read has a last success age")
	}
	if age := samples[key{"gatewayd_device_last_success_age_seconds", l("device", "porch", "driver", "bme280")}]; age < 60 {
		t.Errorf("porch's last success age %v, want at least 60", age)
	}
	// One series per QoS, reason, direction, bridge or device, and no more.
	for name, n := range map[string]int{
		"gatewayd_broker_publish_sent_bytes_total": 3, "gatewayd_broker_publish_dropped_total": 4,
		"gatewayd_broker_connections_refused_total": 3, "gatewayd_bridge_inflight_messages": 4,
		"gatewayd_bridge_connected": 2, "gatewayd_device_reads_total": 2,
	} {
		if got := len(fams[name].GetMetric()); got != n {
			t.Errorf("%s has %d series, want %d", name, got, n)
		}
	}
}
