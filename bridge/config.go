package bridge

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"gatewayd/broker/packet"
	"gatewayd/config"
)

// Profiles name the cloud a bridge talks to; each enforces that cloud's limits.
const (
	ProfileGeneric = "generic"
	ProfileAWSIoT  = "aws-iot"
	ProfileAzure   = "azure-iot-hub"
)

// Directions of a topic rule.
const (
	DirOut  = "out"  // local to cloud
	DirIn   = "in"   // cloud to local
	DirBoth = "both" // both ways, without loops
)

// Queue policies.
const (
	PolicyDropOldest = "drop-oldest"
	PolicyRejectNew  = "reject-new"
)

// Configs is the top-level `bridges` list.
type Configs []Config

// Validate checks every bridge; keys are like "[0].topics[1].direction".
func (cs Configs) Validate() error {
	var errs []error
	names := map[string]int{}
	for i := range cs {
		errs = append(errs, config.Prefix(fmt.Sprintf("[%d]", i), cs[i].Validate()))
		if j, dup := names[cs[i].Name]; dup && cs[i].Name != "" {
			errs = append(errs, config.Errorf(fmt.Sprintf("[%d].name", i), "%q is also the name of bridge [%d]", cs[i].Name, j))
		}
		names[cs[i].Name] = i
	}
	return errors.Join(errs...)
}

// Config is one bridge to a cloud broker. The zero value of each field is
// documented; name, topics and (except for azure-iot-hub with a connection
// string) url are required.
type Config struct {
	// Name names the bridge in logs, $SYS/broker/bridge/<name>/... and the
	// default client id. Letters, digits, '-' and '_'.
	Name string `yaml:"name"`
	// URL is the cloud broker: mqtt://, mqtts://, ws:// or wss://host:port.
	// azure-iot-hub: empty means mqtts://<HostName>:8883 from connection_string.
	URL string `yaml:"url"`
	// ClientID is the client id at the cloud. Empty: "<gateway_id>-<name>"
	// (azure-iot-hub: the DeviceId). For aws-iot it is the thing name.
	ClientID string `yaml:"client_id"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	TLS      TLS    `yaml:"tls"`
	// Protocol is "3.1.1" or "5". Empty: "5" (azure-iot-hub: "3.1.1", the
	// only one it speaks).
	Protocol string `yaml:"protocol"`
	// CleanStart discards the cloud session at the first connection. False
	// (the default) keeps it, so that the cloud queues inbound messages
	// while the gateway is away.
	CleanStart bool `yaml:"clean_start"`
	// KeepAlive is the MQTT keepalive; a link that silently stops carrying
	// bytes is declared dead after at most twice this. Zero: 60 s.
	KeepAlive time.Duration `yaml:"keepalive"`
	// Profile is generic (default), aws-iot or azure-iot-hub.
	Profile string `yaml:"profile"`
	Topics  []Rule `yaml:"topics"`
	Queue   Queue  `yaml:"queue"`
	// DrainRate caps the messages per second sent to the cloud (a token
	// bucket with a burst of one second's worth), so that a backlog built
	// during an outage drains at a pace the uplink and the cloud's throttling
	// accept. Zero: no cap.
	DrainRate float64 `yaml:"drain_rate"`
	// MaxInflight is the window of messages in flight in each direction:
	// local messages sent to the cloud and not yet acknowledged by it (they
	// stay in the local queue until then), and cloud messages handed to the
	// local broker and not yet stored. A backlog drains at about
	// MaxInflight messages per round trip to the cloud; 1 sends one message
	// per round trip. Zero: DefaultMaxInflight with MQTT 5 (the cloud's
	// Receive Maximum caps it), DefaultMaxInflight311 with MQTT 3.1.1, which
	// has no flow control. At most 65535.
	MaxInflight int     `yaml:"max_inflight"`
	Backoff     Backoff `yaml:"backoff"`
	// StatusTopic is where the bridge keeps a retained "online" on the cloud,
	// and its will a retained "offline". Empty: "<remote_prefix of the first
	// out or both rule><gateway_id>/status". "-" disables it. Not used with
	// azure-iot-hub, which has no free topics and no retain.
	StatusTopic string `yaml:"status_topic"`
	// ConnectionString is Azure IoT Hub's device connection string:
	// HostName=<hub>.azure-devices.net;DeviceId=<id>;SharedAccessKey=<base64>.
	ConnectionString string `yaml:"connection_string"`
	// SASTTL is the lifetime of the SAS tokens made from the connection
	// string; the bridge reconnects with a fresh one after 80% of it.
	// Zero: 1 h.
	SASTTL time.Duration `yaml:"sas_ttl"`
}

// TLS configures mqtts:// and wss://.
type TLS struct {
	CAFile   string `yaml:"ca_file"`   // PEM CAs; empty: the system roots
	CertFile string `yaml:"cert_file"` // client certificate (PEM), with key_file
	KeyFile  string `yaml:"key_file"`
	// ServerName is checked in the server certificate and sent as SNI.
	// Empty: the URL's host.
	ServerName string `yaml:"server_name"`
	// ALPN protocols to offer. Empty with aws-iot on port 443:
	// ["x-amzn-mqtt-ca"].
	ALPN               []string `yaml:"alpn"`
	InsecureSkipVerify bool     `yaml:"insecure_skip_verify"`
}

// Rule is one topic mapping, with Mosquitto's bridge `topic` semantics:
// going out, a local topic local_prefix+X is published to the cloud as
// remote_prefix+X; coming in, the reverse.
type Rule struct {
	// Pattern is a topic filter, relative to the prefixes. Empty: "#".
	Pattern string `yaml:"pattern"`
	// Direction is out (default), in or both.
	Direction string `yaml:"direction"`
	// QoS is used to publish to the cloud (out) and to subscribe there (in).
	// aws-iot and azure-iot-hub cap 2 to 1 (logged at start).
	QoS          byte   `yaml:"qos"`
	LocalPrefix  string `yaml:"local_prefix"`
	RemotePrefix string `yaml:"remote_prefix"`
}

// Queue bounds the store-and-forward queue: local messages waiting for the
// cloud, kept in the broker's durable store. The messages already in the
// bridge's hands (the oldest, up to max_inflight) count against the bounds
// but are neither dropped nor expired: with drop-oldest, a full queue holding
// nothing else refuses new messages (rejected/queue_full).
type Queue struct {
	// MaxMessages and MaxBytes bound it. Zero: 100000 messages, 64 MiB.
	MaxMessages int `yaml:"max_messages"`
	MaxBytes    int `yaml:"max_bytes"`
	// MaxAge drops messages older than this instead of sending them.
	// Zero: no limit.
	MaxAge time.Duration `yaml:"max_age"`
	// Policy is drop-oldest (default) or reject-new.
	Policy string `yaml:"policy"`
}

// Backoff spaces reconnection attempts (full jitter).
type Backoff struct {
	Base time.Duration `yaml:"base"` // zero: 1 s
	Cap  time.Duration `yaml:"cap"`  // zero: 2 min
}

// Default queue bounds.
const (
	DefaultMaxMessages = 100000
	DefaultMaxBytes    = 64 << 20
)

// Default windows of messages in flight (Config.MaxInflight). MQTT 3.1.1
// clouds get the smaller one: Mosquitto's default max_inflight_messages is
// 20, and what a 3.1.1 server takes beyond its limit it may drop.
const (
	DefaultMaxInflight    = 32
	DefaultMaxInflight311 = 20
)

func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Validate checks the bridge's configuration.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, config.Errorf(key, format, args...))
	}
	if !validName(c.Name) {
		bad("name", "%q must be non-empty letters, digits, '-' or '_'", c.Name)
	}
	switch c.Profile {
	case "", ProfileGeneric, ProfileAWSIoT, ProfileAzure:
	default:
		bad("profile", "%q is not one of generic, aws-iot, azure-iot-hub", c.Profile)
	}
	switch c.Protocol {
	case "", "5", "5.0", "3.1.1":
	default:
		bad("protocol", "%q is not 3.1.1 or 5", c.Protocol)
	}
	if c.Profile == ProfileAzure {
		if c.Protocol == "5" || c.Protocol == "5.0" {
			bad("protocol", "azure-iot-hub speaks MQTT 3.1.1 only")
		}
		if c.ConnectionString == "" && c.Password == "" {
			bad("connection_string", "azure-iot-hub needs a connection string (or a password holding a SAS token)")
		}
		if c.ConnectionString != "" {
			if _, err := ParseConnectionString(c.ConnectionString); err != nil {
				bad("connection_string", "%v", err)
			}
		}
	}
	if c.URL == "" {
		if c.Profile != ProfileAzure || c.ConnectionString == "" {
			bad("url", "must be set")
		}
	} else if u, err := url.Parse(c.URL); err != nil {
		bad("url", "%v", err)
	} else {
		switch u.Scheme {
		case "mqtt", "tcp", "ws":
			if c.Profile == ProfileAzure || c.Profile == ProfileAWSIoT {
				bad("url", "%s needs TLS: use mqtts:// or wss://", c.Profile)
			}
		case "mqtts", "ssl", "tls", "wss":
		default:
			bad("url", "scheme %q is not mqtt, mqtts, ws or wss", u.Scheme)
		}
		if u.Hostname() == "" {
			bad("url", "%q has no host", c.URL)
		}
	}
	if c.protocol() == packet.V311 && c.Password != "" && c.Username == "" && (c.Profile != ProfileAzure || c.ConnectionString == "") {
		if c.Profile == ProfileAzure {
			bad("password", "azure-iot-hub speaks MQTT 3.1.1, which cannot send a password without a username (<HostName>/<DeviceId>/?api-version=2021-04-12)")
		} else {
			bad("password", "MQTT 3.1.1 cannot send a password without a username")
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file go together")
	}
	if c.KeepAlive < 0 || c.KeepAlive > 65535*time.Second {
		bad("keepalive", "%v is not between 0 and 65535s", c.KeepAlive)
	}
	if c.SASTTL < 0 {
		bad("sas_ttl", "must not be negative")
	} else if c.SASTTL > 0 && c.SASTTL < 10*time.Second {
		bad("sas_ttl", "%v is too short (10s at least)", c.SASTTL)
	}
	if c.DrainRate < 0 {
		bad("drain_rate", "must not be negative")
	}
	if c.MaxInflight < 0 || c.MaxInflight > 65535 {
		bad("max_inflight", "%d is not between 1 and 65535 (0: the default)", c.MaxInflight)
	}
	if c.Backoff.Base < 0 || c.Backoff.Cap < 0 {
		bad("backoff", "durations must not be negative")
	}
	if c.StatusTopic != "" && c.StatusTopic != "-" {
		if err := packet.ValidTopicName([]byte(c.StatusTopic)); err != nil {
			bad("status_topic", "%v", err)
		}
	}
	q := &c.Queue
	if q.MaxMessages < 0 {
		bad("queue.max_messages", "must not be negative")
	}
	if q.MaxBytes < 0 {
		bad("queue.max_bytes", "must not be negative")
	}
	if q.MaxAge < 0 {
		bad("queue.max_age", "must not be negative")
	}
	switch q.Policy {
	case "", PolicyDropOldest, PolicyRejectNew:
	default:
		bad("queue.policy", "%q is not drop-oldest or reject-new", q.Policy)
	}
	if len(c.Topics) == 0 {
		bad("topics", "at least one rule is needed")
	}
	for i, r := range c.Topics {
		key := fmt.Sprintf("topics[%d]", i)
		switch r.Direction {
		case "", DirOut, DirIn, DirBoth:
		default:
			bad(key+".direction", "%q is not out, in or both", r.Direction)
		}
		if r.QoS > 2 {
			bad(key+".qos", "%d is not 0, 1 or 2", r.QoS)
		}
		pat := r.Pattern
		if pat == "" {
			pat = "#"
		}
		if err := packet.ValidTopicFilter([]byte(r.LocalPrefix + pat)); err != nil {
			bad(key+".pattern", "local filter %q: %v", r.LocalPrefix+pat, err)
		}
		if c.Profile != ProfileAzure {
			if err := packet.ValidTopicFilter([]byte(r.RemotePrefix + pat)); err != nil {
				bad(key+".pattern", "remote filter %q: %v", r.RemotePrefix+pat, err)
			}
		}
		if strings.ContainsAny(r.LocalPrefix+r.RemotePrefix, "+#") {
			bad(key, "prefixes must not contain wildcards")
		}
		if strings.HasPrefix(r.LocalPrefix+pat, "$") {
			bad(key+".local_prefix", "local topics starting with '$' belong to the broker")
		}
	}
	return errors.Join(errs...)
}

// profileMaxQoS is the highest QoS the cloud accepts.
func (c *Config) profileMaxQoS() byte {
	if c.Profile == ProfileAWSIoT || c.Profile == ProfileAzure {
		return 1
	}
	return 2
}

func (c *Config) protocol() packet.Version {
	if c.Protocol == "3.1.1" || c.Profile == ProfileAzure {
		return packet.V311
	}
	return packet.V5
}

// window is the number of messages in flight in each direction.
func (c *Config) window() int {
	switch {
	case c.MaxInflight > 0:
		return c.MaxInflight
	case c.protocol() == packet.V311:
		return DefaultMaxInflight311
	}
	return DefaultMaxInflight
}
