// Package packet is gatewayd's MQTT wire codec for protocol levels 3 (MQTT 3.1),
// 4 (MQTT 3.1.1) and 5 (MQTT 5.0).
//
// Decoding validates everything the specifications make a protocol error and
// reports the broken rule in an *Error carrying the v5 reason code to send.
// Decoded packets alias the caller's buffer: byte slices in a decoded packet
// (topics, payloads, strings) stay valid only while that buffer is unchanged,
// so a consumer that keeps them must copy. This is what lets the decoder and the
// encoder allocate nothing per packet in the steady state.
//
// The package must never do I/O or keep global state.
package packet

// Type is an MQTT control packet type (the high nibble of the first byte).
type Type byte

// Control packet types.
const (
	Reserved    Type = 0
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15 // MQTT 5.0 only
)

// Version is the protocol level carried in CONNECT.
type Version byte

// Protocol levels.
const (
	V31  Version = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 Version = 4 // MQTT 3.1.1, protocol name "MQTT"
	V5   Version = 5 // MQTT 5.0, protocol name "MQTT"
)

// MaxRemainingLength is the largest remaining length the variable byte integer
// can express (268,435,455 bytes).
const MaxRemainingLength = 268435455

// FixedHeader is the first two to five bytes of every packet.
type FixedHeader struct {
	Type      Type
	Flags     byte // low nibble of the first byte
	Remaining int  // remaining length: variable header plus payload
}

// Packet is implemented by every decoded packet type.
type Packet interface {
	Type() Type
}

// UserProperty is one v5 user property (a UTF-8 string pair; keys may repeat).
type UserProperty struct {
	Key, Value []byte
}

// Property identifiers (MQTT 5.0 section 2.2.2.2).
const (
	PropPayloadFormat           byte = 0x01
	PropMessageExpiry           byte = 0x02
	PropContentType             byte = 0x03
	PropResponseTopic           byte = 0x08
	PropCorrelationData         byte = 0x09
	PropSubscriptionID          byte = 0x0B
	PropSessionExpiry           byte = 0x11
	PropAssignedClientID        byte = 0x12
	PropServerKeepAlive         byte = 0x13
	PropAuthMethod              byte = 0x15
	PropAuthData                byte = 0x16
	PropRequestProblemInfo      byte = 0x17
	PropWillDelay               byte = 0x18
	PropRequestResponseInfo     byte = 0x19
	PropResponseInfo            byte = 0x1A
	PropServerReference         byte = 0x1C
	PropReasonString            byte = 0x1F
	PropReceiveMaximum          byte = 0x21
	PropTopicAliasMaximum       byte = 0x22
	PropTopicAlias              byte = 0x23
	PropMaximumQoS              byte = 0x24
	PropRetainAvailable         byte = 0x25
	PropUser                    byte = 0x26
	PropMaximumPacketSize       byte = 0x27
	PropWildcardSubAvailable    byte = 0x28
	PropSubscriptionIDAvailable byte = 0x29
	PropSharedSubAvailable      byte = 0x2A
)

// Properties holds every v5 property. Scalar properties are meaningful only
// when their identifier's bit is set in Present (see Has and Set); byte-slice
// properties are present when non-nil. Encoding writes exactly what is present;
// decoding rejects a property that is not allowed in the packet it appears in,
// and a duplicate of any property other than User and SubscriptionID.
type Properties struct {
	Present uint64 // bit n set: property with identifier n present (scalars)

	PayloadFormat           byte
	MessageExpiry           uint32
	ContentType             []byte
	ResponseTopic           []byte
	CorrelationData         []byte
	SubscriptionIDs         []uint32 // PUBLISH may carry several; SUBSCRIBE at most one
	SessionExpiry           uint32
	AssignedClientID        []byte
	ServerKeepAlive         uint16
	AuthMethod              []byte
	AuthData                []byte
	RequestProblemInfo      byte
	WillDelay               uint32
	RequestResponseInfo     byte
	ResponseInfo            []byte
	ServerReference         []byte
	ReasonString            []byte
	ReceiveMaximum          uint16
	TopicAliasMaximum       uint16
	TopicAlias              uint16
	MaximumQoS              byte
	RetainAvailable         byte
	User                    []UserProperty
	MaximumPacketSize       uint32
	WildcardSubAvailable    byte
	SubscriptionIDAvailable byte
	SharedSubAvailable      byte
}

// Has reports whether the scalar property id is present.
func (p *Properties) Has(id byte) bool { return p.Present&(1<<id) != 0 }

// Set marks the scalar property id as present.
func (p *Properties) Set(id byte) { p.Present |= 1 << id }

// Clear marks the scalar property id as absent.
func (p *Properties) Clear(id byte) { p.Present &^= 1 << id }

// Reset empties p, keeping the capacity of its slices for reuse.
func (p *Properties) Reset() {
	*p = Properties{
		SubscriptionIDs: p.SubscriptionIDs[:0],
		User:            p.User[:0],
	}
}

// Connect is the CONNECT packet.
type Connect struct {
	ProtocolName []byte // "MQTT" (levels 4, 5) or "MQIsdp" (level 3)
	Version      Version
	CleanStart   bool // clean session in 3.1/3.1.1
	KeepAlive    uint16
	Props        Properties
	ClientID     []byte

	WillFlag    bool
	WillQoS     byte
	WillRetain  bool
	WillProps   Properties
	WillTopic   []byte
	WillPayload []byte

	UsernameFlag bool
	Username     []byte
	PasswordFlag bool
	Password     []byte
}

// Connack is the CONNACK packet. In 3.1/3.1.1 Reason carries the return code
// (0 accepted, 1..5 refused); use ConnackCodeV3 to map a v5 reason.
type Connack struct {
	SessionPresent bool
	Reason         ReasonCode
	Props          Properties
}

// Publish is the PUBLISH packet. PacketID is zero for QoS 0.
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    []byte // may be empty in v5 when Props.TopicAlias is set
	PacketID uint16
	Props    Properties
	Payload  []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP, told apart by Kind. In v5 the reason
// code and properties may be omitted on the wire when the reason is Success and
// there are no properties; the encoder does that.
type Ack struct {
	Kind     Type
	PacketID uint16
	Reason   ReasonCode
	Props    Properties
}

// Subscription is one topic filter with its options in SUBSCRIBE.
type Subscription struct {
	Filter            []byte
	QoS               byte
	NoLocal           bool // v5
	RetainAsPublished bool // v5
	RetainHandling    byte // v5: 0 send at subscribe, 1 only if new, 2 never
}

// Subscribe is the SUBSCRIBE packet.
type Subscribe struct {
	PacketID      uint16
	Props         Properties
	Subscriptions []Subscription
}

// Suback is the SUBACK packet: one reason code (granted QoS or failure) per
// subscription, in order. In 3.1/3.1.1 a failure is 0x80.
type Suback struct {
	PacketID uint16
	Props    Properties
	Reasons  []ReasonCode
}

// Unsubscribe is the UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID uint16
	Props    Properties
	Filters  [][]byte
}

// Unsuback is the UNSUBACK packet. Reasons is v5 only.
type Unsuback struct {
	PacketID uint16
	Props    Properties
	Reasons  []ReasonCode
}

// Pingreq is the PINGREQ packet.
type Pingreq struct{}

// Pingresp is the PINGRESP packet.
type Pingresp struct{}

// Disconnect is the DISCONNECT packet (reason and properties are v5 only).
type Disconnect struct {
	Reason ReasonCode
	Props  Properties
}

// Auth is the v5 AUTH packet.
type Auth struct {
	Reason ReasonCode
	Props  Properties
}

func (*Connect) Type() Type     { return CONNECT }
func (*Connack) Type() Type     { return CONNACK }
func (*Publish) Type() Type     { return PUBLISH }
func (a *Ack) Type() Type       { return a.Kind }
func (*Subscribe) Type() Type   { return SUBSCRIBE }
func (*Suback) Type() Type      { return SUBACK }
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }
func (*Unsuback) Type() Type    { return UNSUBACK }
func (*Pingreq) Type() Type     { return PINGREQ }
func (*Pingresp) Type() Type    { return PINGRESP }
func (*Disconnect) Type() Type  { return DISCONNECT }
func (*Auth) Type() Type        { return AUTH }
