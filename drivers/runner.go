package drivers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"gatewayd/broker/client"
)

// Availability payloads on <topic>/status.
const (
	Online  = "online"
	Offline = "offline"
)

// MaxBackoff caps the wait before a failing device is tried again (unless
// its interval is longer: then the interval).
const MaxBackoff = 5 * time.Minute

// DefaultSafeAfter is how long an output waits, with the broker unreachable,
// before it applies its safe state.
const DefaultSafeAfter = 30 * time.Second

// DeviceStats counts one device's activity.
type DeviceStats struct {
	Name   string
	Driver string
	Online bool
	// Reads counts successful reads (Sensor) or readings emitted (Source) or
	// commands applied (Output).
	Reads uint64
	// Errors counts failed opens, reads, runs and commands.
	Errors      uint64
	LastSuccess time.Time
	LastError   string
}

// Runner runs every configured device until its context ends.
type Runner struct {
	cfg       Config
	gatewayID string
	hw        Hardware
	dial      func(context.Context) (net.Conn, error)
	board     BoardInfo
	log       *slog.Logger
	devs      []*deviceRun
	disc      *discovery
}

// NewRunner prepares the devices of cfg (which must have passed Validate) for
// gateway gatewayID. dial opens a connection to the broker for each device's
// client; nil means cfg.BrokerURL. board describes the gateway in Home
// Assistant's device registry. logger may be nil.
func NewRunner(cfg Config, gatewayID string, hw Hardware, dial func(context.Context) (net.Conn, error), board BoardInfo, logger *slog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !nameRE.MatchString(gatewayID) {
		// It is a topic level, part of client ids and Home Assistant's
		// node_id, which allows [a-zA-Z0-9_-] only.
		return nil, fmt.Errorf("drivers: gateway id %q: want 1-64 letters, digits, '_' or '-'", gatewayID)
	}
	if dial == nil && cfg.BrokerURL == "" {
		return nil, errors.New("drivers: no broker: broker_url is empty and no in-process dialer was given")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TopicPrefix == "" {
		cfg.TopicPrefix = "gatewayd"
	}
	if cfg.Payload == "" {
		cfg.Payload = PayloadPlain
	}
	if cfg.HomeAssistant.Prefix == "" {
		cfg.HomeAssistant.Prefix = "homeassistant"
	}
	r := &Runner{cfg: cfg, gatewayID: gatewayID, hw: hw, dial: dial, board: board, log: logger}
	for _, d := range cfg.Devices {
		r.devs = append(r.devs, &deviceRun{
			r:     r,
			cfg:   d,
			topic: d.TopicFor(cfg.TopicPrefix, gatewayID),
			log:   logger.With("device", d.Name, "driver", d.Driver),
			stats: DeviceStats{Name: d.Name, Driver: d.Driver},
		})
	}
	if cfg.HomeAssistant.Enabled {
		r.disc = newDiscovery(r)
	}
	return r, nil
}

// Run runs every device, each on its own MQTT client, until ctx ends. Then
// outputs go to their safe state, each device publishes offline and
// disconnects, and Run returns nil. A device that fails is retried with
// backoff; it never stops the others.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if r.disc != nil {
		wg.Go(func() { r.disc.run(ctx) })
	}
	for _, d := range r.devs {
		wg.Go(func() { d.run(ctx) })
	}
	wg.Wait()
	return nil
}

// Stats returns each device's counters, in configuration order.
func (r *Runner) Stats() []DeviceStats {
	out := make([]DeviceStats, len(r.devs))
	for i, d := range r.devs {
		d.mu.Lock()
		out[i] = d.stats
		d.mu.Unlock()
	}
	return out
}

// ClientID returns the MQTT client id of device name.
func (r *Runner) ClientID(name string) string { return "gatewayd-" + r.gatewayID + "-" + name }

func (r *Runner) newClient(id, willTopic string, onChange func(client.State, error)) (*client.Client, error) {
	return client.New(client.Options{
		URL:           r.cfg.BrokerURL,
		Dialer:        r.dial,
		ClientID:      id,
		CleanStart:    true,
		AutoReconnect: true,
		Backoff:       client.Backoff{Base: 500 * time.Millisecond, Cap: 30 * time.Second},
		MaxPending:    256,
		Will: &client.Will{Message: client.Message{
			Topic: willTopic, Payload: []byte(Offline), QoS: 1, Retain: true,
		}},
		OnConnectionChange: onChange,
		Logger:             r.log.With("mqtt_client", id),
	})
}

// backoff returns the wait before attempt n (from 0) of a device whose
// interval is base.
func backoff(base time.Duration, n int) time.Duration {
	if base <= 0 {
		base = time.Second
	}
	limit := max(MaxBackoff, base)
	d := base
	for range n {
		d *= 2
		if d >= limit {
			return limit
		}
	}
	return d
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// format renders a reading's payload: plain or JSON.
func format(mode string, rd Reading, unit string, prec int) []byte {
	var num string
	if !rd.IsText {
		num = strconv.FormatFloat(rd.Value, 'f', prec, 64)
	}
	if mode != PayloadJSON {
		if rd.IsText {
			return []byte(rd.Text)
		}
		return []byte(num)
	}
	b := []byte(`{"value":`)
	if rd.IsText {
		b = appendJSONString(b, rd.Text)
	} else {
		b = append(b, num...)
	}
	if unit != "" {
		b = append(b, `,"unit":`...)
		b = appendJSONString(b, unit)
	}
	ts := rd.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, ts.UnixMilli(), 10)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string, keeping non-ASCII text (°C)
// as UTF-8.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', byte(c))
		case c < 0x20:
			b = fmt.Appendf(b, `\u%04x`, c)
		default:
			b = append(b, string(c)...)
		}
	}
	return append(b, '"')
}
