// Package metrics serves gatewayd's Prometheus /metrics endpoint in the text
// exposition format (version 0.0.4). Every value is read from the
// components' Stats functions when Prometheus scrapes, so metrics cost
// nothing on the broker's hot path; this package must never count anything
// itself. gatewayd's own families are written here, with their HELP text;
// the go_* and process_* families come from github.com/VictoriaMetrics/metrics,
// which is much smaller in the binary than Prometheus' client library.
package metrics

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"gatewayd/bridge"
	"gatewayd/broker"
	"gatewayd/broker/state"
	"gatewayd/config"
	"gatewayd/drivers"
)

// DefaultAddress is where the packaged configuration serves /metrics
// (9469 is not taken by a well-known exporter).
const DefaultAddress = "127.0.0.1:9469"

// Config is the metrics section of gatewayd's configuration.
type Config struct {
	// Address is host:port for the HTTP endpoint /metrics; empty disables it.
	Address string `yaml:"address"`
}

// Validate checks the address.
func (c *Config) Validate() error {
	if c.Address == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		return config.Errorf("address", "%q is not host:port: %v", c.Address, err)
	}
	return nil
}

// Sources are the Stats functions read at each scrape; any may be nil.
type Sources struct {
	Version string
	Broker  func() broker.Stats
	Store   state.Health
	Bridges func() map[string]bridge.Stats // by bridge name
	Devices func() []drivers.DeviceStats
}

// Collector writes gatewayd's metrics in the Prometheus text exposition
// format, reading Sources anew each time.
type Collector struct{ src Sources }

// NewCollector returns a collector reading src at each scrape.
func NewCollector(src Sources) *Collector { return &Collector{src: src} }

// A family is one metric name with its HELP text, type and label names.
type family struct {
	name, help, typ string
	labels          []string
}

// families lists every family in the order they are written.
var families []*family

func newFamily(typ, name, help string, labels []string) *family {
	f := &family{name: "gatewayd_" + name, help: help, typ: typ, labels: labels}
	families = append(families, f)
	return f
}

func newGauge(name, help string, labels ...string) *family {
	return newFamily("gauge", name, help, labels)
}

func newCounter(name, help string, labels ...string) *family {
	return newFamily("counter", name, help, labels)
}

var (
	buildInfo = newGauge("build_info", "gatewayd's version; always 1.", "version")

	uptime         = newGauge("broker_uptime_seconds", "Seconds since the broker started.")
	clients        = newGauge("broker_clients_connected", "Clients connected now.")
	offline        = newGauge("broker_sessions_disconnected", "Persistent sessions without a connection.")
	clientsMax     = newGauge("broker_clients_maximum", "Most clients connected at once.")
	connects       = newCounter("broker_connects_total", "Connections accepted (CONNACK sent).")
	disconnects    = newCounter("broker_disconnects_total", "Accepted connections that ended, takeovers included.")
	packetsIn      = newCounter("broker_packets_received_total", "MQTT packets received, of any type.")
	packetsOut     = newCounter("broker_packets_sent_total", "MQTT packets sent, of any type.")
	bytesIn        = newCounter("broker_received_bytes_total", "Bytes received from clients.")
	bytesOut       = newCounter("broker_sent_bytes_total", "Bytes sent to clients.")
	publishIn      = newCounter("broker_publish_received_total", "PUBLISH packets received.")
	publishOut     = newCounter("broker_publish_sent_total", "PUBLISH packets sent.")
	publishInQoS   = newCounter("broker_publish_messages_received_total", "PUBLISH packets received, by QoS.", "qos")
	publishOutQoS  = newCounter("broker_publish_messages_sent_total", "PUBLISH packets sent, by the QoS delivered at.", "qos")
	payloadIn      = newCounter("broker_publish_received_bytes_total", "Payload bytes of the PUBLISH packets received, by QoS.", "qos")
	payloadOut     = newCounter("broker_publish_sent_bytes_total", "Payload bytes of the PUBLISH packets sent, by QoS.", "qos")
	dropped        = newCounter("broker_publish_dropped_total", "Messages dropped, by reason.", "reason")
	subscriptions  = newGauge("broker_subscriptions", "Subscriptions held.")
	retained       = newGauge("broker_retained_messages", "Retained messages held.")
	queued         = newGauge("broker_queued_messages", "QoS 1 and 2 messages queued or in flight to clients.")
	refused        = newCounter("broker_connections_refused_total", "Connections refused, by reason.", "reason")
	protocolErrors = newCounter("broker_protocol_errors_total", "Connections closed for a protocol error.")
	storeFailures  = newCounter("broker_store_failures_total", "Store commits that failed; their messages were refused.")
	denied         = newCounter("broker_acl_denied_total", "Operations refused by the ACL, by operation.", "op")

	fsyncs       = newCounter("store_fsyncs_total", "fsync and fdatasync calls of the store.")
	written      = newCounter("store_written_bytes_total", "Bytes the store wrote.")
	writeErrors  = newCounter("store_write_errors_total", "Failed store writes or fsyncs.")
	stored       = newCounter("store_messages_stored_total", "Messages made durable.")
	liveBytes    = newGauge("store_live_bytes", "Live data in the store (what store.max_bytes limits).")
	diskBytes    = newGauge("store_disk_bytes", "Size of the store's files.")
	storeDamaged = newGauge("store_damaged", "1 when the store found at start-up was damaged (moved aside, or its newest log cut at the damage).")

	bridgeUp         = newGauge("bridge_connected", "1 while the bridge is connected to its cloud broker.", "bridge")
	bridgeQueued     = newGauge("bridge_queued_messages", "Messages waiting for the cloud.", "bridge")
	bridgeQueuedB    = newGauge("bridge_queued_bytes", "Bytes of the messages waiting for the cloud.", "bridge")
	bridgeOldest     = newGauge("bridge_oldest_queued_age_seconds", "Age of the oldest message waiting for the cloud.", "bridge")
	bridgeSent       = newCounter("bridge_sent_messages_total", "Messages the cloud acknowledged.", "bridge")
	bridgeInflight   = newGauge("bridge_inflight_messages", "Messages in the bridge's hands, by direction: out, sent to the cloud and not yet acknowledged by it; in, handed to the local broker and not yet stored.", "bridge", "direction")
	bridgeReceived   = newCounter("bridge_received_messages_total", "Messages from the cloud stored by the local broker.", "bridge")
	bridgeDropped    = newCounter("bridge_dropped_messages_total", "Messages dropped by policy, by reason.", "bridge", "reason")
	bridgeRejected   = newCounter("bridge_rejected_messages_total", "Messages refused, by reason.", "bridge", "reason")
	bridgeReconnects = newCounter("bridge_reconnects_total", "Cloud connections after the first.", "bridge")

	deviceOnline  = newGauge("device_online", "1 while the device answers.", "device", "driver")
	deviceReads   = newCounter("device_reads_total", "Successful reads (or readings, or commands applied).", "device", "driver")
	deviceErrors  = newCounter("device_read_errors_total", "Failed opens, reads and commands.", "device", "driver")
	deviceLastAge = newGauge("device_last_success_age_seconds", "Seconds since the last successful read.", "device", "driver")
)

// A sample is one series of a family: its label values, in the order of the
// family's label names, and its value.
type sample struct {
	labels []string
	value  float64
}

// WritePrometheus reads every source once and writes each family that has
// samples: its HELP and TYPE lines, then its samples ordered by label values.
// The set of bridges and devices may change with a reload, so which series
// appear is decided anew at each scrape.
func (c *Collector) WritePrometheus(w io.Writer) {
	w.Write(appendFamilies(nil, c.collect()))
}

// collect reads the sources into samples by family.
func (c *Collector) collect() map[*family][]sample {
	got := make(map[*family][]sample, len(families))
	add := func(f *family, v float64, l ...string) {
		if len(l) != len(f.labels) {
			panic(fmt.Sprintf("metrics: %s takes labels %v, got values %q", f.name, f.labels, l))
		}
		got[f] = append(got[f], sample{l, v})
	}
	gauge := func(f *family, v float64, l ...string) { add(f, v, l...) }
	counter := func(f *family, v uint64, l ...string) { add(f, float64(v), l...) }
	gauge(buildInfo, 1, c.src.Version)
	if c.src.Broker != nil {
		s := c.src.Broker()
		gauge(uptime, s.Uptime.Seconds())
		gauge(clients, float64(s.ClientsConnected))
		gauge(offline, float64(s.ClientsDisconnected))
		gauge(clientsMax, float64(s.ClientsMaximum))
		counter(connects, s.Connects)
		counter(disconnects, s.Disconnects)
		counter(packetsIn, s.MessagesReceived)
		counter(packetsOut, s.MessagesSent)
		counter(bytesIn, s.BytesReceived)
		counter(bytesOut, s.BytesSent)
		counter(publishIn, s.PublishReceived)
		counter(publishOut, s.PublishSent)
		for q, l := range [3]string{"0", "1", "2"} {
			counter(publishInQoS, s.PublishReceivedQoS[q], l)
			counter(publishOutQoS, s.PublishSentQoS[q], l)
			counter(payloadIn, s.PublishBytesReceivedQoS[q], l)
			counter(payloadOut, s.PublishBytesSentQoS[q], l)
		}
		counter(dropped, s.DroppedSlowConsumer, "slow_consumer")
		counter(dropped, s.DroppedQueueFull, "queue_full")
		counter(dropped, s.DroppedTooLarge, "too_large")
		counter(dropped, s.DroppedExpired, "expired")
		gauge(subscriptions, float64(s.Subscriptions))
		gauge(retained, float64(s.Retained))
		gauge(queued, float64(s.Queued))
		counter(refused, s.AuthFailures, "auth")
		counter(refused, s.ConnectionsOverLimit, "max_connections")
		counter(refused, s.ConnectionsRateLimited, "rate_limited")
		counter(protocolErrors, s.ProtocolErrors)
		counter(storeFailures, s.StoreFailures)
		counter(denied, s.PublishDenied, "publish")
		counter(denied, s.SubscribeDenied, "subscribe")
	}
	if c.src.Store != nil {
		s := c.src.Store.Stats()
		counter(fsyncs, s.Fsyncs)
		counter(written, s.BytesWritten)
		counter(writeErrors, s.WriteErrors)
		counter(stored, s.MessagesStored)
		gauge(liveBytes, float64(s.LiveBytes))
		gauge(diskBytes, float64(s.DiskBytes))
		d := 0.0
		if damaged, _ := c.src.Store.Damaged(); damaged {
			d = 1
		}
		gauge(storeDamaged, d)
	}
	if c.src.Bridges != nil {
		for name, s := range c.src.Bridges() {
			up := 0.0
			if s.State == "connected" {
				up = 1
			}
			gauge(bridgeUp, up, name)
			gauge(bridgeQueued, float64(s.QueuedMessages), name)
			gauge(bridgeQueuedB, float64(s.QueuedBytes), name)
			gauge(bridgeOldest, s.OldestQueued.Seconds(), name)
			gauge(bridgeInflight, float64(s.InflightOut), name, "out")
			gauge(bridgeInflight, float64(s.InflightIn), name, "in")
			counter(bridgeSent, s.Sent, name)
			counter(bridgeReceived, s.Received, name)
			for r, n := range s.Dropped {
				counter(bridgeDropped, n, name, r)
			}
			for r, n := range s.Rejected {
				counter(bridgeRejected, n, name, r)
			}
			counter(bridgeReconnects, s.Reconnects, name)
		}
	}
	if c.src.Devices != nil {
		now := time.Now()
		for _, d := range c.src.Devices() {
			on := 0.0
			if d.Online {
				on = 1
			}
			gauge(deviceOnline, on, d.Name, d.Driver)
			counter(deviceReads, d.Reads, d.Name, d.Driver)
			counter(deviceErrors, d.Errors, d.Name, d.Driver)
			if !d.LastSuccess.IsZero() {
				gauge(deviceLastAge, now.Sub(d.LastSuccess).Seconds(), d.Name, d.Driver)
			}
		}
	}
	return got
}

// appendFamilies appends the families that have samples in the text
// exposition format.
func appendFamilies(b []byte, got map[*family][]sample) []byte {
	for _, f := range families {
		ss := got[f]
		if len(ss) == 0 {
			continue
		}
		slices.SortFunc(ss, func(x, y sample) int { return slices.Compare(x.labels, y.labels) })
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, helpEscaper.Replace(f.help)...)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.typ...)
		b = append(b, '\n')
		for _, s := range ss {
			b = append(b, f.name...)
			for i, l := range s.labels {
				if i == 0 {
					b = append(b, '{')
				} else {
					b = append(b, ',')
				}
				b = append(b, f.labels[i]...)
				b = append(b, `="`...)
				b = append(b, labelEscaper.Replace(l)...)
				b = append(b, '"')
			}
			if len(s.labels) > 0 {
				b = append(b, '}')
			}
			b = append(b, ' ')
			b = appendValue(b, s.value)
			b = append(b, '\n')
		}
	}
	return b
}

// The text format escapes \ and newlines in HELP text, and also " in label
// values.
var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// appendValue writes v as the text format wants it: the shortest exact
// decimal form, and +Inf, -Inf or NaN.
func appendValue(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// Server serves /metrics over HTTP.
type Server struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
	col *Collector
}

// Listen binds cfg.Address and prepares the handler: gatewayd's collector,
// then Go runtime and process metrics. It returns nil, nil when the address
// is empty.
func Listen(cfg Config, src Sources, log *slog.Logger) (*Server, error) {
	if cfg.Address == "" {
		return nil, nil
	}
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("metrics: cannot listen on %s (change metrics.address): %w", cfg.Address, err)
	}
	// The library's go_* and process_* families get TYPE lines (and HELP
	// lines without text) only with this process-wide setting.
	vm.ExposeMetadata(true)
	s := &Server{ln: ln, log: log, col: NewCollector(src)}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", s.serveMetrics)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// serveMetrics answers a scrape, gzipped when the scraper accepts it.
func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	s.col.WritePrometheus(&buf)
	vm.WriteGoMetrics(&buf)
	vm.WriteProcMetrics(&buf)
	vm.WriteFDMetrics(&buf)
	h := w.Header()
	h.Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	h.Add("Vary", "Accept-Encoding")
	if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
		w.Write(buf.Bytes())
		return
	}
	h.Set("Content-Encoding", "gzip")
	zw := gzipWriters.Get().(*gzip.Writer)
	zw.Reset(w)
	zw.Write(buf.Bytes())
	zw.Close()
	gzipWriters.Put(zw)
}

// gzipWriters keeps gzip writers between scrapes: each holds about 800 KB of
// compression state.
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// acceptsGzip tells whether an Accept-Encoding header lists gzip without
// refusing it (q=0).
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if strings.TrimSpace(coding) != "gzip" {
			continue
		}
		q, ok := strings.CutPrefix(strings.TrimSpace(params), "q=")
		if !ok {
			return true
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(q), 64)
		return err == nil && v > 0
	}
	return false
}

// Addr is the address being served.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown.
func (s *Server) Serve() {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("metrics: serving stopped", "err", err)
	}
}

// Shutdown stops serving.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
