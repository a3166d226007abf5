package client

import (
	"time"
	"unsafe"

	"gatewayd/broker/packet"
)

// Message is an application message, published or received.
//
// A received Message belongs to the handler it is passed to: its Payload and
// CorrelationData are not reused by the client.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte // 0, 1 or 2
	Retain  bool
	// Dup is set on receipt when the server marked the PUBLISH as a possible
	// redelivery. It is ignored when publishing.
	Dup bool

	// MQTT 5.0 properties; ignored (not sent, never set) with 3.1.1.

	// PayloadFormat is 1 when the payload is UTF-8 text, 0 for bytes.
	PayloadFormat byte
	// MessageExpiry is the message's lifetime (rounded down to seconds);
	// zero means it does not expire.
	MessageExpiry time.Duration
	ContentType   string
	// ResponseTopic and CorrelationData support request/response.
	ResponseTopic   string
	CorrelationData []byte
	UserProperties  []UserProperty
	// SubscriptionIDs are set on receipt: the identifiers of the
	// subscriptions that matched.
	SubscriptionIDs []uint32

	ack *ackSlot // received with Options.ManualAck: its acknowledgement
}

// Ack acknowledges a received QoS 1 or 2 message of a client with
// Options.ManualAck. The acknowledgement leaves once every message received
// before it has been acknowledged too; if the connection it came on has
// been lost meanwhile, nothing is sent and the server sends the message
// again. Ack may be called from any goroutine; it does nothing on a QoS 0
// message, a message not received with ManualAck, or when called again.
func (m *Message) Ack() {
	if s := m.ack; s != nil {
		s.c.ack(s)
	}
}

// UserProperty is one v5 user property; keys may repeat.
type UserProperty struct {
	Key, Value string
}

// Subscription is one topic filter with its options.
type Subscription struct {
	Filter string
	QoS    byte // maximum QoS the server may deliver with
	// v5 options.
	NoLocal           bool // do not receive this client's own messages
	RetainAsPublished bool // keep the retain flag as the publisher set it
	RetainHandling    byte // 0 send retained at subscribe, 1 only if new, 2 never
}

// Handler is called with each received message whose topic matches the
// subscription it was registered with. Handlers of one client run one at a
// time, in the order messages arrived, on one goroutine; a QoS 1 or 2 message
// is acknowledged when its handler returns (with Options.ManualAck, when
// Message.Ack is called). A handler that blocks delays every
// later message; it must not wait for an acknowledgement of its own QoS 1/2
// Publish (use PublishAsync), since acknowledgements are read by the same
// connection that is waiting for the handler. When several of the client's
// subscriptions match, each of their handlers gets the same *Message, which
// they must then treat as read-only.
type Handler func(*Message)

// b returns the bytes of s without copying. The codec only reads them.
func b(s string) []byte {
	if s == "" {
		return nil
	}
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// userProps converts to the codec's representation, aliasing the strings.
func userProps(u []UserProperty) []packet.UserProperty {
	if len(u) == 0 {
		return nil
	}
	out := make([]packet.UserProperty, len(u))
	for i, p := range u {
		out[i] = packet.UserProperty{Key: b(p.Key), Value: b(p.Value)}
	}
	return out
}

// props fills pp with m's v5 publication properties.
func (m *Message) props(pp *packet.Properties) {
	if m.PayloadFormat != 0 {
		pp.PayloadFormat = m.PayloadFormat
		pp.Set(packet.PropPayloadFormat)
	}
	if m.MessageExpiry > 0 {
		pp.MessageExpiry = seconds(m.MessageExpiry)
		pp.Set(packet.PropMessageExpiry)
	}
	pp.ContentType = b(m.ContentType)
	pp.ResponseTopic = b(m.ResponseTopic)
	pp.CorrelationData = m.CorrelationData
	pp.User = userProps(m.UserProperties)
}

func seconds(d time.Duration) uint32 {
	s := d / time.Second
	if s > 1<<32-1 {
		return 1<<32 - 1
	}
	return uint32(s)
}

// toPublish builds the PUBLISH for m; it aliases m.
func (m *Message) toPublish(v packet.Version) packet.Publish {
	p := packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: b(m.Topic), Payload: m.Payload}
	if v == packet.V5 {
		m.props(&p.Props)
	}
	return p
}

// messageFrom builds a Message from a decoded PUBLISH whose body the caller
// owns (topic and payload alias it); topic overrides p.Topic when set
// (topic alias).
func messageFrom(p *packet.Publish, topic []byte) *Message {
	if topic == nil {
		topic = p.Topic
	}
	m := &Message{
		Topic:   string(topic),
		Payload: p.Payload,
		QoS:     p.QoS,
		Retain:  p.Retain,
		Dup:     p.Dup,
	}
	pp := &p.Props
	if pp.Has(packet.PropPayloadFormat) {
		m.PayloadFormat = pp.PayloadFormat
	}
	if pp.Has(packet.PropMessageExpiry) {
		m.MessageExpiry = time.Duration(pp.MessageExpiry) * time.Second
	}
	if pp.ContentType != nil {
		m.ContentType = string(pp.ContentType)
	}
	if pp.ResponseTopic != nil {
		m.ResponseTopic = string(pp.ResponseTopic)
	}
	m.CorrelationData = pp.CorrelationData
	if len(pp.User) > 0 {
		m.UserProperties = make([]UserProperty, len(pp.User))
		for i, u := range pp.User {
			m.UserProperties[i] = UserProperty{string(u.Key), string(u.Value)}
		}
	}
	if len(pp.SubscriptionIDs) > 0 {
		m.SubscriptionIDs = append([]uint32(nil), pp.SubscriptionIDs...)
	}
	return m
}

// MatchTopic reports whether topic matches filter (MQTT 4.7), including a
// shared subscription's filter.
func MatchTopic(filter, topic string) bool {
	if len(filter) > 7 && filter[:7] == "$share/" {
		if _, f, ok := packet.ParseShared(b(filter)); ok {
			filter = filter[len(filter)-len(f):]
		}
	}
	// [MQTT-4.7.2-1] wildcards at the first level do not match $ topics.
	if len(topic) > 0 && topic[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := cut(filter)
		tl, trest, tmore := cut(topic)
		switch {
		case fl == "#":
			return true
		case fl != "+" && fl != tl:
			return false
		}
		if !fmore && !tmore {
			return true
		}
		if !fmore {
			return false
		}
		if !tmore {
			// "a/#" matches "a".
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}

func cut(s string) (level, rest string, more bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
