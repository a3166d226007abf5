package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"time"

	"gatewayd/broker/packet"
)

// Options configures a Client. The zero value of every field is documented;
// URL (or Dialer) is the only one that must be set.
type Options struct {
	// URL is the server: mqtt://host:port (tcp:// is the same), mqtts://
	// (ssl:// and tls:// too), ws://host:port/path or wss://host:port/path.
	// Default ports: 1883, 8883, 80, 443. User information in the URL is
	// ignored: use Username and Password.
	URL string
	// Dialer, if set, opens the connection instead of dialing URL; URL may
	// then be empty. In-process users hand in one end of a net.Pipe.
	Dialer func(ctx context.Context) (net.Conn, error)

	// ClientID is the client identifier. Empty: the server assigns one (v5) or
	// the session must be clean (3.1.1).
	ClientID string
	// Username and Password are sent when non-empty.
	Username string
	Password string

	// Protocol is the protocol level: 4 (MQTT 3.1.1) or 5 (MQTT 5.0).
	// Zero means 5.
	Protocol packet.Version
	// CleanStart discards any session the server holds for ClientID. With
	// MQTT 5.0 it applies to the Client's first connection only: later ones
	// never ask for a clean start, so that the session resumes if the server
	// kept it (see SessionExpiry). MQTT 3.1.1 sends it, as the clean session
	// flag, on every connection.
	CleanStart bool
	// SessionExpiry is how long the server keeps the session after the
	// connection closes (v5; rounded down to seconds, at most 2^32-1 s).
	// Zero: the session ends with the connection.
	SessionExpiry time.Duration
	// KeepAlive is the longest the client stays silent; a PINGREQ is sent
	// when nothing else was. Zero means 60 s; negative disables keepalive.
	// A v5 server may impose its own (Server Keep Alive).
	KeepAlive time.Duration
	// PingTimeout is how long to wait for PINGRESP before the connection is
	// declared dead. Zero means KeepAlive.
	PingTimeout time.Duration
	// ConnectTimeout bounds one connection attempt (dial, TLS, WebSocket
	// handshake, CONNECT/CONNACK). Zero means 30 s.
	ConnectTimeout time.Duration

	// TLS configures mqtts:// and wss://. Nil means the system roots and
	// ServerName taken from URL. See NewTLSConfig.
	TLS *tls.Config

	// Will is published by the server if the connection ends without a
	// normal DISCONNECT. Nil: no will.
	Will *Will
	// ConnectProperties are v5 CONNECT properties.
	ConnectProperties ConnectProperties

	// AutoReconnect makes Connect retry until it succeeds (or its context
	// ends), and reconnect in the background whenever the connection is
	// lost afterwards, until Disconnect. Without it a lost connection fails
	// every message not yet acknowledged with ErrConnectionLost.
	AutoReconnect bool
	// Backoff spaces connection attempts.
	Backoff Backoff
	// MaxInflight caps how many QoS 1/2 messages are sent and not yet
	// acknowledged, below the server's Receive Maximum. Zero: the server's
	// Receive Maximum with MQTT 5.0, 20 with MQTT 3.1.1, which has no flow
	// control (mosquitto, for one, acknowledges and drops what comes in
	// beyond its max_inflight_messages, 20 by default).
	MaxInflight int
	// MaxPending bounds how many QoS 1/2 messages may wait for a place in the
	// server's Receive Maximum window or for a connection. Zero: no bound.
	MaxPending int

	// OnConnectionChange is called on every state change, with the error that
	// caused it for StateDisconnected. Calls are made in order from one
	// goroutine at a time; the function must not call Connect or Disconnect.
	OnConnectionChange func(State, error)
	// OnReconnectWait, if set, is told each wait before a connection attempt:
	// attempt counts from 0 for the first retry after a failure.
	OnReconnectWait func(attempt int, wait time.Duration)
	// DefaultHandler receives messages that match none of the client's
	// subscriptions (for instance, from a session resumed before Subscribe
	// was called again). Nil: such messages are acknowledged and dropped.
	DefaultHandler Handler
	// ManualAck makes received QoS 1 and 2 messages wait for their
	// Message.Ack instead of being acknowledged when their handlers return,
	// so that a handler can pass a message on and return at once, and
	// several messages can be in the application's hands. Acknowledgements
	// still leave in the order the messages arrived ([MQTT-4.6.0-2]): one
	// waits until every earlier message has been acknowledged too. Every
	// QoS 1/2 message a handler receives must therefore be acknowledged;
	// one that never is holds back the acknowledgements of all later ones
	// until the next Connect. A message that matches no handler is
	// acknowledged at once.
	ManualAck bool

	// Logger receives connection events. Nil: nothing is logged.
	Logger *slog.Logger
}

// Will is the will message and its v5 properties (in Message) plus the v5
// Will Delay Interval.
type Will struct {
	Message
	// Delay is how long the server waits before publishing the will (v5,
	// rounded down to seconds).
	Delay time.Duration
}

// ConnectProperties are the v5 CONNECT properties the client may send. Zero
// values are not sent.
type ConnectProperties struct {
	// ReceiveMaximum is how many QoS 1/2 messages the server may have in
	// flight to this client (zero: 65535).
	ReceiveMaximum uint16
	// TopicAliasMaximum is how many topic aliases the server may use towards
	// this client (zero: none).
	TopicAliasMaximum uint16
	// MaximumPacketSize is the largest packet the client accepts (zero: no
	// limit beyond the protocol's).
	MaximumPacketSize uint32
	// UserProperties are sent as they are.
	UserProperties []UserProperty
}

// Backoff spaces connection attempts: the wait before retry n (from 0) is
// drawn uniformly from [0, min(Cap, Base*2^n)] ("full jitter"), so that many
// gateways cut off together do not come back together.
type Backoff struct {
	Base time.Duration // zero: 1 s
	Cap  time.Duration // zero: 2 min
}

func (b Backoff) withDefaults() Backoff {
	if b.Base <= 0 {
		b.Base = time.Second
	}
	if b.Cap <= 0 {
		b.Cap = 2 * time.Minute
	}
	if b.Cap < b.Base {
		b.Cap = b.Base
	}
	return b
}

// Bound is the upper end of the wait before retry n: min(Cap, Base*2^n).
func (b Backoff) Bound(n int) time.Duration {
	b = b.withDefaults()
	d := b.Base
	for i := 0; i < n && d < b.Cap; i++ {
		d *= 2
	}
	return min(d, b.Cap)
}

// Delay draws the wait before retry n from [0, Bound(n)].
func (b Backoff) Delay(n int) time.Duration {
	return time.Duration(rand.Int64N(int64(b.Bound(n)) + 1))
}

// TLSFiles names what NewTLSConfig loads.
type TLSFiles struct {
	// CAFile is a PEM bundle of the CAs trusted to sign the server's
	// certificate. Empty: the system roots.
	CAFile string
	// CertFile and KeyFile are the client certificate and key (PEM) for
	// mutual TLS. Both or neither.
	CertFile, KeyFile string
	// ServerName is the name checked in the server's certificate and sent as
	// SNI. Empty: the host in the URL.
	ServerName string
	// NextProtos are the ALPN protocols offered; AWS IoT Core on port 443
	// wants "x-amzn-mqtt-ca".
	NextProtos []string
}

// NewTLSConfig builds a TLS configuration (TLS 1.2 at least) from files.
func NewTLSConfig(f TLSFiles) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: f.ServerName,
		NextProtos: f.NextProtos,
	}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt client: tls ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mqtt client: tls ca file %s: no PEM certificate found", f.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, fmt.Errorf("mqtt client: tls client certificate needs both a cert file and a key file (got cert %q, key %q)", f.CertFile, f.KeyFile)
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt client: tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// validate checks o and fills in defaults; it returns the parsed URL (nil with
// a Dialer and no URL).
func (o *Options) validate() (*url.URL, error) {
	var u *url.URL
	if o.URL != "" {
		var err error
		u, err = url.Parse(o.URL)
		if err != nil {
			return nil, fmt.Errorf("mqtt client: url %q: %w", o.URL, err)
		}
		switch u.Scheme {
		case "mqtt", "tcp", "mqtts", "ssl", "tls", "ws", "wss":
		default:
			return nil, fmt.Errorf("mqtt client: url %q: scheme %q is not mqtt, tcp, mqtts, ws or wss", o.URL, u.Scheme)
		}
		if u.Hostname() == "" {
			return nil, fmt.Errorf("mqtt client: url %q has no host", o.URL)
		}
	} else if o.Dialer == nil {
		return nil, fmt.Errorf("mqtt client: neither URL nor Dialer is set")
	}
	switch o.Protocol {
	case 0:
		o.Protocol = packet.V5
	case packet.V311, packet.V5:
	default:
		return nil, fmt.Errorf("mqtt client: protocol level %d is not 4 (3.1.1) or 5", o.Protocol)
	}
	if o.Protocol == packet.V311 && o.Password != "" && o.Username == "" {
		return nil, fmt.Errorf("mqtt client: MQTT 3.1.1 cannot send a password without a user name")
	}
	if o.Protocol == packet.V311 && o.ClientID == "" && !o.CleanStart {
		return nil, fmt.Errorf("mqtt client: MQTT 3.1.1 needs a ClientID to keep a session (set ClientID or CleanStart)")
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = 60 * time.Second
	}
	if o.KeepAlive > 65535*time.Second {
		return nil, fmt.Errorf("mqtt client: keepalive %v is longer than 65535 s", o.KeepAlive)
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = max(o.KeepAlive, time.Second)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 65535
		if o.Protocol == packet.V311 {
			o.MaxInflight = 20
		}
	}
	o.Backoff = o.Backoff.withDefaults()
	if w := o.Will; w != nil {
		if err := packet.ValidTopicName([]byte(w.Topic)); err != nil {
			return nil, fmt.Errorf("mqtt client: will topic: %w", err)
		}
		if w.QoS > 2 {
			return nil, fmt.Errorf("mqtt client: will QoS %d", w.QoS)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return u, nil
}
