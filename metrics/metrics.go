// Package metrics serves gatewayd's Prometheus /metrics endpoint. Every value
// is read from the components' Stats functions when Prometheus scrapes, so
// metrics cost nothing on the broker's hot path; this package must never
// count anything itself.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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

// Collector is a prometheus.Collector over Sources.
type Collector struct{ src Sources }

// NewCollector returns a collector reading src at each scrape.
func NewCollector(src Sources) *Collector { return &Collector{src: src} }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("gatewayd_"+name, help, labels, nil)
}

var (
	buildInfo = desc("build_info", "gatewayd's version; always 1.", "version")

	uptime         = desc("broker_uptime_seconds", "Seconds since the broker started.")
	clients        = desc("broker_clients_connected", "Clients connected now.")
	offline        = desc("broker_sessions_disconnected", "Persistent sessions without a connection.")
	clientsMax     = desc("broker_clients_maximum", "Most clients connected at once.")
	packetsIn      = desc("broker_packets_received_total", "MQTT packets received, of any type.")
	packetsOut     = desc("broker_packets_sent_total", "MQTT packets sent, of any type.")
	bytesIn        = desc("broker_received_bytes_total", "Bytes received from clients.")
	bytesOut       = desc("broker_sent_bytes_total", "Bytes sent to clients.")
	publishIn      = desc("broker_publish_received_total", "PUBLISH packets received.")
	publishOut     = desc("broker_publish_sent_total", "PUBLISH packets sent.")
	publishInQoS   = desc("broker_publish_messages_received_total", "PUBLISH packets received, by QoS.", "qos")
	publishOutQoS  = desc("broker_publish_messages_sent_total", "PUBLISH packets sent, by the QoS delivered at.", "qos")
	payloadIn      = desc("broker_publish_received_bytes_total", "Payload bytes of the PUBLISH packets received, by QoS.", "qos")
	payloadOut     = desc("broker_publish_sent_bytes_total", "Payload bytes of the PUBLISH packets sent, by QoS.", "qos")
	dropped        = desc("broker_publish_dropped_total", "Messages dropped, by reason.", "reason")
	subscriptions  = desc("broker_subscriptions", "Subscriptions held.")
	retained       = desc("broker_retained_messages", "Retained messages held.")
	queued         = desc("broker_queued_messages", "QoS 1 and 2 messages queued or in flight to clients.")
	refused        = desc("broker_connections_refused_total", "Connections refused, by reason.", "reason")
	protocolErrors = desc("broker_protocol_errors_total", "Connections closed for a protocol error.")
	storeFailures  = desc("broker_store_failures_total", "Store commits that failed; their messages were refused.")
	denied         = desc("broker_acl_denied_total", "Operations refused by the ACL, by operation.", "op")

	fsyncs       = desc("store_fsyncs_total", "fsync and fdatasync calls of the store.")
	written      = desc("store_written_bytes_total", "Bytes the store wrote.")
	writeErrors  = desc("store_write_errors_total", "Failed store writes or fsyncs.")
	stored       = desc("store_messages_stored_total", "Messages made durable.")
	liveBytes    = desc("store_live_bytes", "Live data in the store (what store.max_bytes limits).")
	diskBytes    = desc("store_disk_bytes", "Size of the store's files.")
	storeDamaged = desc("store_damaged", "1 when the store found at start-up was damaged (moved aside, or its newest log cut at the damage).")

	bridgeUp         = desc("bridge_connected", "1 while the bridge is connected to its cloud broker.", "bridge")
	bridgeQueued     = desc("bridge_queued_messages", "Messages waiting for the cloud.", "bridge")
	bridgeQueuedB    = desc("bridge_queued_bytes", "Bytes of the messages waiting for the cloud.", "bridge")
	bridgeOldest     = desc("bridge_oldest_queued_age_seconds", "Age of the oldest message waiting for the cloud.", "bridge")
	bridgeSent       = desc("bridge_sent_messages_total", "Messages the cloud acknowledged.", "bridge")
	bridgeInflight   = desc("bridge_inflight_messages", "Messages in the bridge's hands, by direction: out, sent to the cloud and not yet acknowledged by it; in, handed to the local broker and not yet stored.", "bridge", "direction")
	bridgeReceived   = desc("bridge_received_messages_total", "Messages from the cloud stored by the local broker.", "bridge")
	bridgeDropped    = desc("bridge_dropped_messages_total", "Messages dropped by policy, by reason.", "bridge", "reason")
	bridgeRejected   = desc("bridge_rejected_messages_total", "Messages refused, by reason.", "bridge", "reason")
	bridgeReconnects = desc("bridge_reconnects_total", "Cloud connections after the first.", "bridge")

	deviceOnline  = desc("device_online", "1 while the device answers.", "device", "driver")
	deviceReads   = desc("device_reads_total", "Successful reads (or readings, or commands applied).", "device", "driver")
	deviceErrors  = desc("device_read_errors_total", "Failed opens, reads and commands.", "device", "driver")
	deviceLastAge = desc("device_last_success_age_seconds", "Seconds since the last successful read.", "device", "driver")
)

// Describe sends nothing: the set of bridges and devices may change with a
// reload, so the collector is unchecked.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect reads every source once.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge(buildInfo, 1, c.src.Version)
	if c.src.Broker != nil {
		s := c.src.Broker()
		gauge(uptime, s.Uptime.Seconds())
		gauge(clients, float64(s.ClientsConnected))
		gauge(offline, float64(s.ClientsDisconnected))
		gauge(clientsMax, float64(s.ClientsMaximum))
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
}

// Server serves /metrics over HTTP.
type Server struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen binds cfg.Address and prepares the handler: gatewayd's collector,
// Go runtime and process metrics. It returns nil, nil when the address is
// empty.
func Listen(cfg Config, src Sources, log *slog.Logger) (*Server, error) {
	if cfg.Address == "" {
		return nil, nil
	}
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("metrics: cannot listen on %s (change metrics.address): %w", cfg.Address, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s := &Server{ln: ln, log: log, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	return s, nil
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
