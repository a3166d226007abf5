package broker

import (
	"net"
	"path"
	"time"

	"gatewayd/broker/auth"
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
	// SlowConsumerWait is how long a client's PUBLISH may wait for a
	// subscriber that is behind and makes no progress: a QoS 0 message that
	// does not fit the subscriber's output buffer waits for its writer to
	// make room instead of being dropped, and after a QoS 1/2 message to an
	// online subscriber whose queue holds more than MaxOutputBytes the
	// publisher's next packet waits for the queue to shrink; either wait
	// goes on while the subscriber makes progress (a write to it completes,
	// in chunks of at most 64 KiB, or it acknowledges a message) at least
	// this often. Waiting holds up only the publishing connection, whose unread
	// packets throttle the client through TCP (backpressure). A subscriber
	// that makes no room in time is marked stalled: its QoS 0 messages are
	// dropped (counted) without waiting, and nobody waits for its queue,
	// until it makes progress again (a write to it completes, or it
	// acknowledges a message). 0 drops at once, never waiting; default
	// 100 ms.
	SlowConsumerWait time.Duration `yaml:"slow_consumer_wait"`
	// WriteTimeout is how long one write to a client may take before the
	// client is considered dead and disconnected. 0 means 30 s.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// ConnectTimeout is how long a new connection may take to send CONNECT.
	// 0 means 10 s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// EventLoop serves plain TCP connections (not TLS or WebSocket) from one
	// epoll loop instead of a goroutine each: an idle client then costs
	// about 1.5 KiB, and a message crosses the broker without waking
	// goroutines. Default true.
	EventLoop bool `yaml:"event_loop"`

	// PasswordFile is a Mosquitto-style password file (user:hash a line;
	// argon2id, $7$ or $6$ hashes, see package broker/auth); "" means none.
	// With one, a client that sends a user name must send that user's
	// password (v5 CONNACK 0x86, 3.1.1 0x04 otherwise). Reload re-reads it.
	PasswordFile string `yaml:"password_file"`
	// ACLFile is a Mosquitto-style acl_file (see package broker/auth); ""
	// means every client may publish and subscribe to everything. A refused
	// SUBSCRIBE filter gets v5 0x87 / 3.1.1 0x80; a refused PUBLISH is not
	// routed (v5 PUBACK/PUBREC 0x87); every delivery is checked again.
	// Reload re-reads it.
	ACLFile string `yaml:"acl_file"`
	// AuthThrottle slows down password guessing: after auth_throttle.free
	// (5) failed logins from one address, each further CONNACK from it is
	// delayed by base_delay (100 ms), doubling up to max_delay (10 s).
	AuthThrottle auth.ThrottleConfig `yaml:"auth_throttle"`

	// MaxConnections bounds the open network connections over all
	// listeners (in-process connections served by ServeConn under a name
	// that is not a listener's do not count). The connection beyond it is
	// read up to its CONNECT and refused with v5 CONNACK 0x97 Quota
	// exceeded / 3.1.1 0x03 Server unavailable, and counted in
	// Stats.ConnectionsOverLimit; while more than twice the limit are open,
	// further ones are closed at once, unread (and counted). 0 means no
	// limit; default 1024.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerSecondPerAddress limits how fast one IP address (one
	// /64 for IPv6) may open connections to a listener: a token bucket
	// refilled at this rate, holding at most this many. A connection beyond
	// it is closed as soon as it is accepted, before any byte is read, and
	// counted in Stats.ConnectionsRateLimited; other addresses are not
	// affected. It applies to listeners on non-loopback addresses (a
	// listener's own setting replaces it, and is the only one a loopback
	// listener uses). 0 means no limit; default 20.
	MaxConnectionsPerSecondPerAddress int `yaml:"max_connections_per_second_per_address"`
	// MaxSubscriptionsPerClient bounds one session's subscriptions; a SUBSCRIBE
	// filter beyond it (a new one, not a replacement) gets v5 0x97 Quota
	// exceeded / 3.1.1 0x80 and counts in Stats.SubscriptionsRefused. 0
	// means no limit; default 100.
	MaxSubscriptionsPerClient int `yaml:"max_subscriptions_per_client"`
	// MaxRetainedMessages and MaxRetainedBytes (topic plus payload) bound the
	// retained messages clients set ($SYS values do not count). A retained
	// PUBLISH to a new topic beyond either bound, or one replacing a message
	// with a larger one beyond MaxRetainedBytes, is refused: not routed, v5
	// PUBACK/PUBREC 0x97 Quota exceeded, counted in Stats.RetainedRefused.
	// Replacing or clearing an existing topic is always allowed otherwise.
	// 0 means no limit; defaults 10000 messages and 16 MiB.
	MaxRetainedMessages int `yaml:"max_retained_messages"`
	MaxRetainedBytes    int `yaml:"max_retained_bytes"`
}

// ListenerConfig is one listener.
type ListenerConfig struct {
	// Name identifies the listener in logs and metrics; defaults to Address.
	Name string `yaml:"name"`
	// Address is host:port to listen on.
	Address string `yaml:"address"`
	// Type is "mqtt" (MQTT over TCP, the default) or "ws" (MQTT over
	// WebSocket, subprotocol "mqtt", binary frames; with TLS it is wss).
	Type string `yaml:"type"`
	// Path is the HTTP path a ws listener serves; default /mqtt.
	Path string `yaml:"path"`
	// Origins are the hosts (host or host:port, with path.Match wildcards
	// such as *.example.com) of browser pages allowed to open a ws
	// listener's WebSocket besides pages from the listener's own host and
	// port; other cross-origin pages are refused with HTTP 403. Clients
	// that send no Origin header (not browsers) are not affected.
	Origins []string `yaml:"origins"`
	// AllowAnonymous says whether clients without a user name (and without
	// a certificate identity, see TLS.UsernameFrom) may connect. Unset, it
	// is true on a loopback address and false on any other, so exposing
	// the broker to the network never exposes it to anyone by accident. A
	// refused anonymous client gets v5 CONNACK 0x87 / 3.1.1 0x05.
	AllowAnonymous *bool `yaml:"allow_anonymous"`
	// MaxConnections bounds this listener's open connections, like the
	// broker-wide max_connections. 0 means no limit of its own.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerSecondPerAddress, when set, replaces the broker-wide
	// max_connections_per_second_per_address for this listener (0: no
	// limit). Unset, a loopback listener has no rate limit: its clients
	// are the gateway's own programs.
	MaxConnectionsPerSecondPerAddress *int `yaml:"max_connections_per_second_per_address"`
	// TLS, when set, makes the listener TLS-only (TLS 1.2 or later).
	TLS *TLSConfig `yaml:"tls"`
}

// TLSConfig is a listener's TLS setup. Files are PEM; Reload and
// ReloadCertificates re-read them without dropping connected clients.
type TLSConfig struct {
	// CertFile and KeyFile are the broker's certificate (chain) and key.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile holds the CAs that sign client certificates. With it, a
	// client certificate is verified when one is sent.
	ClientCAFile string `yaml:"client_ca_file"`
	// RequireClientCert refuses, during the handshake, a client without a
	// certificate signed by ClientCAFile (mutual TLS).
	RequireClientCert bool `yaml:"require_client_cert"`
	// UsernameFrom takes the client's user name from its verified
	// certificate: "cn" the subject common name, "san" the first DNS name,
	// or failing that the first email address, of the subject alternative
	// names; "" does not. A client so identified needs no password on this
	// listener; if it sends one, the password is checked for that user.
	UsernameFrom string `yaml:"username_from"`
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
		EventLoop:         true,
		SysInterval:       10 * time.Second,
		MaximumQoS:        2,
		MaxOutputBytes:    256 << 10,
		SlowConsumerWait:  100 * time.Millisecond,
		WriteTimeout:      30 * time.Second,
		ConnectTimeout:    10 * time.Second,

		MaxConnections:                    1024,
		MaxConnectionsPerSecondPerAddress: 20,
		MaxSubscriptionsPerClient:         100,
		MaxRetainedMessages:               10000,
		MaxRetainedBytes:                  16 << 20,
	}
}

// Validate checks c; errors are *config.FieldError with keys relative to the
// broker section.
func (c *Config) Validate() error {
	var errs []error
	names := map[string]bool{}
	for i, l := range c.Listeners {
		key := keyIndex("listeners", i)
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			errs = append(errs, config.Errorf(key+".address", "%q is not host:port: %v", l.Address, err))
		}
		if l.Name != "" && names[l.Name] {
			errs = append(errs, config.Errorf(key+".name", "%q names two listeners", l.Name))
		}
		names[l.Name] = true
		switch l.Type {
		case "", "mqtt":
			if l.Path != "" {
				errs = append(errs, config.Errorf(key+".path", "only a ws listener has a path"))
			}
			if len(l.Origins) > 0 {
				errs = append(errs, config.Errorf(key+".origins", "only a ws listener has origins"))
			}
		case "ws":
			if l.Path != "" && l.Path[0] != '/' {
				errs = append(errs, config.Errorf(key+".path", "%q does not start with /", l.Path))
			}
			for j, o := range l.Origins {
				if _, err := path.Match(o, ""); err != nil || o == "" {
					errs = append(errs, config.Errorf(key+".origins["+itoa(j)+"]", "%q is not a host pattern", o))
				}
			}
		default:
			errs = append(errs, config.Errorf(key+".type", "%q is not mqtt or ws", l.Type))
		}
		if l.MaxConnections < 0 {
			errs = append(errs, config.Errorf(key+".max_connections", "must not be negative"))
		}
		if r := l.MaxConnectionsPerSecondPerAddress; r != nil && *r < 0 {
			errs = append(errs, config.Errorf(key+".max_connections_per_second_per_address", "must not be negative"))
		}
		if t := l.TLS; t != nil {
			if t.CertFile == "" {
				errs = append(errs, config.Errorf(key+".tls.cert_file", "is required with tls"))
			}
			if t.KeyFile == "" {
				errs = append(errs, config.Errorf(key+".tls.key_file", "is required with tls"))
			}
			if t.RequireClientCert && t.ClientCAFile == "" {
				errs = append(errs, config.Errorf(key+".tls.client_ca_file", "is required with require_client_cert"))
			}
			switch t.UsernameFrom {
			case "", "cn", "san":
				if t.UsernameFrom != "" && t.ClientCAFile == "" {
					errs = append(errs, config.Errorf(key+".tls.client_ca_file", "is required with username_from"))
				}
			default:
				errs = append(errs, config.Errorf(key+".tls.username_from", "%q is not cn, san or empty", t.UsernameFrom))
			}
		}
	}
	for _, k := range []struct {
		key string
		v   int
	}{
		{"max_connections", c.MaxConnections},
		{"max_connections_per_second_per_address", c.MaxConnectionsPerSecondPerAddress},
		{"max_subscriptions_per_client", c.MaxSubscriptionsPerClient},
		{"max_retained_messages", c.MaxRetainedMessages},
		{"max_retained_bytes", c.MaxRetainedBytes},
	} {
		if k.v < 0 {
			errs = append(errs, config.Errorf(k.key, "must not be negative"))
		}
	}
	errs = append(errs, config.Prefix("auth_throttle", c.AuthThrottle.Validate()))
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
	if c.SlowConsumerWait < 0 {
		errs = append(errs, config.Errorf("slow_consumer_wait", "must not be negative"))
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
