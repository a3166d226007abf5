package broker

import (
	"net"
	"time"

	"gatewayd/config"
)

// Config configures the broker. Its zero value is not usable: start from
// DefaultConfig and change what you need. Keys are documented in README.md.
type Config struct {
	// Listeners are the network endpoints. With none, the broker listens on
	// 127.0.0.1:1883.
	Listeners []ListenerConfig `yaml:"listeners"`

	// MaxPacketSize is the largest packet accepted from or sent to a client,
	// in bytes (v5 Maximum Packet Size).
	MaxPacketSize uint32 `yaml:"max_packet_size"`
	// ReceiveMaximum is how many QoS 1/2 PUBLISH a client may have in flight
	// towards the broker (v5 Receive Maximum).
	ReceiveMaximum uint16 `yaml:"receive_maximum"`
	// MaxInflight caps how many QoS 1/2 messages the broker has in flight to one
	// client, whatever the client's own Receive Maximum.
	MaxInflight uint16 `yaml:"max_inflight"`
	// MaxQueuedMessages and MaxQueuedBytes bound one client's outbound queue
	// of QoS 1/2 messages, in flight included (offline or slow). What does
	// not fit is dropped and counted. 0 means no limit.
	MaxQueuedMessages int `yaml:"max_queued_messages"`
	MaxQueuedBytes    int `yaml:"max_queued_bytes"`
	// MaxKeepAlive is the largest keepalive granted, in seconds (v5 Server
	// Keep Alive is sent when it lowers the client's). 0 means no limit.
	MaxKeepAlive uint16 `yaml:"max_keepalive"`
	// MaxSessionExpiry caps a v5 client's Session Expiry Interval and is the
	// expiry given to 3.1/3.1.1 persistent sessions (clean session 0); 0
	// makes every session end with its connection.
	MaxSessionExpiry time.Duration `yaml:"max_session_expiry"`
	// TopicAliasMaximum is how many topic aliases a v5 client may use towards
	// the broker; 0 disables inbound aliases.
	TopicAliasMaximum uint16 `yaml:"topic_alias_maximum"`
	// RetainAvailable enables retained messages.
	RetainAvailable bool `yaml:"retain_available"`
	// SysInterval is how often $SYS/broker/... topics are published; 0 disables.
	SysInterval time.Duration `yaml:"sys_interval"`

	// MaximumQoS is the highest QoS the broker accepts and grants (0, 1 or 2;
	// v5 Maximum QoS). Subscriptions asking for more are granted this.
	MaximumQoS byte `yaml:"maximum_qos"`
	// MaxOutputBytes bounds the encoded bytes waiting to be written to one
	// client. QoS 0 messages that do not fit are dropped and counted, so a slow
	// reader costs at most this much memory; QoS 1/2 messages wait in the
	// session queue instead. 0 means 256 KiB.
	MaxOutputBytes int `yaml:"max_output_bytes"`
	// WriteTimeout is how long one write to a client may take before the
	// client is considered dead and disconnected. 0 means 30 s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ConnectTimeout is how long a new connection may take to send CONNECT.
	// 0 means 10 s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// ListenerConfig is one listener.
type ListenerConfig struct {
	// Name identifies the listener in logs and metrics; defaults to Address.
	Name string `yaml:"name"`
	// Address is host:port to listen on.
	Address string `yaml:"address"`
}

// DefaultAddress is where the broker listens when no listener is configured.
const DefaultAddress = "127.0.0.1:1883"

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxPacketSize:     1 << 20,
		ReceiveMaximum:    256,
		MaxInflight:       64,
		MaxQueuedMessages: 1000,
		MaxQueuedBytes:    4 << 20,
		MaxKeepAlive:      0,
		MaxSessionExpiry:  7 * 24 * time.Hour,
		TopicAliasMaximum: 64,
		RetainAvailable:   true,
		SysInterval:       10 * time.Second,
		MaximumQoS:        2,
		MaxOutputBytes:    256 << 10,
		WriteTimeout:      30 * time.Second,
		ConnectTimeout:    10 * time.Second,
	}
}

// Validate checks c; errors are *config.FieldError with keys relative to the
// broker section.
func (c *Config) Validate() error {
	var errs []error
	for i, l := range c.Listeners {
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			errs = append(errs, config.Errorf(keyIndex("listeners", i)+".address", "%q is not host:port: %v", l.Address, err))
		}
	}
	if c.MaxPacketSize < 64 || c.MaxPacketSize > 268435460 {
		errs = append(errs, config.Errorf("max_packet_size", "%d is outside 64..268435460", c.MaxPacketSize))
	}
	if c.ReceiveMaximum == 0 {
		errs = append(errs, config.Errorf("receive_maximum", "must be at least 1"))
	}
	if c.MaxInflight == 0 {
		errs = append(errs, config.Errorf("max_inflight", "must be at least 1"))
	}
	if c.MaxQueuedMessages < 0 {
		errs = append(errs, config.Errorf("max_queued_messages", "must not be negative"))
	}
	if c.MaxQueuedBytes < 0 {
		errs = append(errs, config.Errorf("max_queued_bytes", "must not be negative"))
	}
	if c.MaxSessionExpiry < 0 {
		errs = append(errs, config.Errorf("max_session_expiry", "must not be negative"))
	}
	if c.MaximumQoS > 2 {
		errs = append(errs, config.Errorf("maximum_qos", "%d is not 0, 1 or 2", c.MaximumQoS))
	}
	if c.MaxOutputBytes < 0 {
		errs = append(errs, config.Errorf("max_output_bytes", "must not be negative"))
	}
	if c.WriteTimeout < 0 {
		errs = append(errs, config.Errorf("write_timeout", "must not be negative"))
	}
	if c.ConnectTimeout < 0 {
		errs = append(errs, config.Errorf("connect_timeout", "must not be negative"))
	}
	if c.SysInterval < 0 {
		errs = append(errs, config.Errorf("sys_interval", "must not be negative"))
	}
	return joinErrs(errs)
}

func keyIndex(key string, i int) string { return key + "[" + itoa(i) + "]" }
