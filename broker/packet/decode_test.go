package packet

import (
	"bytes"
	"errors"
	"testing"
)

// Wire examples: bytes from the MQTT 3.1.1 and 5.0 specifications' examples
// where they give some, hand-assembled per their field tables otherwise.
var decodeCases = []struct {
	name string
	v    Version // decoder version (ignored for CONNECT)
	wire []byte
	want Packet
}{
	{
		// MQTT 3.1.1 section 3.1.2.10: protocol name MQTT, level 4, flags 0xCE
		// (user name, password, will QoS 1, will flag, clean session), keep
		// alive 10; then the payload in section 3.1.3 order.
		name: "3.1.1 CONNECT spec variable header example",
		wire: bs(0x10, 0x1E,
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0xCE, 0x00, 0x0A,
			0x00, 0x02, 'c', '1',
			0x00, 0x03, 'w', '/', 't',
			0x00, 0x03, 'b', 'y', 'e',
			0x00, 0x01, 'u',
			0x00, 0x01, 'p'),
		want: &Connect{ProtocolName: []byte("MQTT"), Version: V311, CleanStart: true, KeepAlive: 10,
			ClientID: []byte("c1"), WillFlag: true, WillQoS: 1, WillTopic: []byte("w/t"), WillPayload: []byte("bye"),
			UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte("p")},
	},
	{
		name: "3.1 CONNECT MQIsdp level 3",
		wire: bs(0x10, 0x11, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0x02, 0x00, 0x3C, 0x00, 0x03, 'a', 'b', 'c'),
		want: &Connect{ProtocolName: []byte("MQIsdp"), Version: V31, CleanStart: true, KeepAlive: 60, ClientID: []byte("abc")},
	},
	{
		name: "3.1.1 CONNECT empty client id with clean session",
		wire: bs(0x10, 0x0C, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00),
		want: &Connect{ProtocolName: []byte("MQTT"), Version: V311, CleanStart: true},
	},
	{
		// MQTT 5.0 section 3.1.2.12: level 5, flags 0xCE, keep alive 10,
		// properties length 5, session expiry interval (0x11) 10.
		name: "5.0 CONNECT spec variable header example",
		wire: bs(0x10, 0x25,
			0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0xCE, 0x00, 0x0A,
			0x05, 0x11, 0x00, 0x00, 0x00, 0x0A,
			0x00, 0x02, 'c', '1',
			0x02, 0x18, 0x00, // will properties: will delay interval... truncated below
		),
		want: nil, // replaced in init: needs a valid will property block
	},
	{
		name: "3.1.1 CONNACK accepted",
		v:    V311,
		wire: bs(0x20, 0x02, 0x00, 0x00),
		want: &Connack{},
	},
	{
		name: "3.1.1 CONNACK session present",
		v:    V311,
		wire: bs(0x20, 0x02, 0x01, 0x00),
		want: &Connack{SessionPresent: true},
	},
	{
		name: "3.1 CONNACK refused identifier rejected",
		v:    V31,
		wire: bs(0x20, 0x02, 0x00, 0x02),
		want: &Connack{Reason: V3RefusedIdentifierRejected},
	},
	{
		name: "5.0 CONNACK success no properties",
		v:    V5,
		wire: bs(0x20, 0x03, 0x00, 0x00, 0x00),
		want: &Connack{},
	},
	{
		name: "5.0 CONNACK with server capabilities",
		v:    V5,
		wire: bs(0x20, 0x1B, 0x01, 0x00, 0x18,
			0x12, 0x00, 0x03, 'g', 'w', '1', // assigned client id
			0x13, 0x00, 0x3C, // server keep alive 60
			0x21, 0x00, 0x14, // receive maximum 20
			0x22, 0x00, 0x0A, // topic alias maximum 10
			0x24, 0x01, // maximum QoS 1
			0x25, 0x00, // retain not available
			0x27, 0x00, 0x01, 0x00, 0x00), // maximum packet size 65536
		want: &Connack{SessionPresent: true, Props: Properties{
			Present:          1<<PropServerKeepAlive | 1<<PropReceiveMaximum | 1<<PropTopicAliasMaximum | 1<<PropMaximumQoS | 1<<PropRetainAvailable | 1<<PropMaximumPacketSize,
			AssignedClientID: []byte("gw1"), ServerKeepAlive: 60, ReceiveMaximum: 20, TopicAliasMaximum: 10,
			MaximumQoS: 1, RetainAvailable: 0, MaximumPacketSize: 65536}},
	},
	{
		name: "5.0 CONNACK refused not authorized with reason string",
		v:    V5,
		wire: bs(0x20, 0x09, 0x00, 0x87, 0x06, 0x1F, 0x00, 0x03, 'n', 'o', '!'),
		want: &Connack{Reason: NotAuthorized, Props: Properties{ReasonString: []byte("no!")}},
	},
	{
		name: "3.1.1 PUBLISH QoS 0",
		v:    V311,
		wire: bs(0x30, 0x0A, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o'),
		want: &Publish{Topic: []byte("a/b"), Payload: []byte("hello")},
	},
	{
		// MQTT 3.1.1 section 3.3.2.3: topic "a/b", packet identifier 10.
		name: "3.1.1 PUBLISH QoS 1 spec example",
		v:    V311,
		wire: bs(0x32, 0x08, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x0A, 'x'),
		want: &Publish{QoS: 1, Topic: []byte("a/b"), PacketID: 10, Payload: []byte("x")},
	},
	{
		name: "3.1 PUBLISH QoS 2 dup retain empty payload",
		v:    V31,
		wire: bs(0x3D, 0x07, 0x00, 0x03, 'a', '/', 'b', 0xFF, 0xFF),
		want: &Publish{Dup: true, QoS: 2, Retain: true, Topic: []byte("a/b"), PacketID: 65535},
	},
	{
		name: "5.0 PUBLISH QoS 0 no properties",
		v:    V5,
		wire: bs(0x30, 0x06, 0x00, 0x01, 't', 0x00, 'h', 'i'),
		want: &Publish{Topic: []byte("t"), Payload: []byte("hi")},
	},
	{
		name: "5.0 PUBLISH QoS 1 with every PUBLISH property",
		v:    V5,
		wire: pkt(0x32, str("s/1"), bs(0x00, 0x07), bs(0x30,
			0x01, 0x01, // payload format: UTF-8
			0x02, 0x00, 0x00, 0x0E, 0x10, // message expiry 3600
			0x03, 0x00, 0x04, 'j', 's', 'o', 'n', // content type
			0x08, 0x00, 0x03, 'r', '/', '1', // response topic
			0x09, 0x00, 0x02, 0xDE, 0xAD, // correlation data
			0x0B, 0x01, // subscription id 1
			0x0B, 0x80, 0x01, // subscription id 128
			0x23, 0x00, 0x05, // topic alias 5
			0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // user property k=v
			0x26, 0x00, 0x01, 'k', 0x00, 0x02, 'v', '2', // repeated key
		), []byte(`{"t":21.5}`)),
		want: &Publish{QoS: 1, Topic: []byte("s/1"), PacketID: 7, Payload: []byte(`{"t":21.5}`), Props: Properties{
			Present:       1<<PropPayloadFormat | 1<<PropMessageExpiry | 1<<PropTopicAlias,
			PayloadFormat: 1, MessageExpiry: 3600, ContentType: []byte("json"), ResponseTopic: []byte("r/1"),
			CorrelationData: []byte{0xDE, 0xAD}, SubscriptionIDs: []uint32{1, 128}, TopicAlias: 5,
			User: []UserProperty{{[]byte("k"), []byte("v")}, {[]byte("k"), []byte("v2")}}}},
	},
	{
		name: "5.0 PUBLISH empty topic with topic alias",
		v:    V5,
		wire: bs(0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, 'z'),
		want: &Publish{Topic: []byte{}, Payload: []byte("z"), Props: Properties{Present: 1 << PropTopicAlias, TopicAlias: 1}},
	},
	{
		name: "3.1.1 PUBACK",
		v:    V311,
		wire: bs(0x40, 0x02, 0x00, 0x01),
		want: &Ack{Kind: PUBACK, PacketID: 1},
	},
	{
		name: "3.1.1 PUBREC",
		v:    V311,
		wire: bs(0x50, 0x02, 0x12, 0x34),
		want: &Ack{Kind: PUBREC, PacketID: 0x1234},
	},
	{
		name: "3.1 PUBREL",
		v:    V31,
		wire: bs(0x62, 0x02, 0x00, 0x02),
		want: &Ack{Kind: PUBREL, PacketID: 2},
	},
	{
		name: "3.1.1 PUBCOMP",
		v:    V311,
		wire: bs(0x70, 0x02, 0xFF, 0xFF),
		want: &Ack{Kind: PUBCOMP, PacketID: 65535},
	},
	{
		name: "5.0 PUBACK remaining length 2 is Success",
		v:    V5,
		wire: bs(0x40, 0x02, 0x00, 0x09),
		want: &Ack{Kind: PUBACK, PacketID: 9},
	},
	{
		name: "5.0 PUBACK remaining length 3 is reason only",
		v:    V5,
		wire: bs(0x40, 0x03, 0x00, 0x09, 0x10),
		want: &Ack{Kind: PUBACK, PacketID: 9, Reason: NoMatchingSubscribers},
	},
	{
		name: "5.0 PUBREC reason with empty property block",
		v:    V5,
		wire: bs(0x50, 0x04, 0x00, 0x09, 0x97, 0x00),
		want: &Ack{Kind: PUBREC, PacketID: 9, Reason: QuotaExceeded},
	},
	{
		name: "5.0 PUBREL packet identifier not found with reason string",
		v:    V5,
		wire: bs(0x62, 0x09, 0x00, 0x09, 0x92, 0x05, 0x1F, 0x00, 0x02, 'n', 'f'),
		want: &Ack{Kind: PUBREL, PacketID: 9, Reason: PacketIdentifierNotFound, Props: Properties{ReasonString: []byte("nf")}},
	},
	{
		name: "5.0 PUBCOMP",
		v:    V5,
		wire: bs(0x70, 0x02, 0x00, 0x09),
		want: &Ack{Kind: PUBCOMP, PacketID: 9},
	},
	{
		// MQTT 3.1.1 section 3.8.3: "a/b" QoS 1 and "c/d" QoS 2.
		name: "3.1.1 SUBSCRIBE spec payload example",
		v:    V311,
		wire: bs(0x82, 0x0E, 0x00, 0x0A, 0x00, 0x03, 'a', '/', 'b', 0x01, 0x00, 0x03, 'c', '/', 'd', 0x02),
		want: &Subscribe{PacketID: 10, Subscriptions: []Subscription{{Filter: []byte("a/b"), QoS: 1}, {Filter: []byte("c/d"), QoS: 2}}},
	},
	{
		name: "5.0 SUBSCRIBE with subscription id and all options",
		v:    V5,
		wire: bs(0x82, 0x13, 0x00, 0x0A, 0x02, 0x0B, 0x05,
			0x00, 0x03, 'a', '/', '+', 0x2D, // QoS 1, no local, retain as published, retain handling 2
			0x00, 0x06, 's', '/', '#', '/', '/', '#', 0x00),
		want: nil, // "s/#//#" is invalid: replaced below
	},
	{
		name: "5.0 SUBSCRIBE shared subscription",
		v:    V5,
		wire: bs(0x82, 0x14, 0x00, 0x01, 0x00, 0x00, 0x0E, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 's', '/', '+', '/', 't', 0x11),
		want: &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: []byte("$share/g/s/+/t"), QoS: 1, RetainHandling: 1}}},
	},
	{
		// MQTT 3.1.1 section 3.9.3: return codes 0, 1, 2 and failure 0x80.
		name: "3.1.1 SUBACK spec payload example",
		v:    V311,
		wire: bs(0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80),
		want: &Suback{PacketID: 10, Reasons: []ReasonCode{GrantedQoS0, GrantedQoS1, GrantedQoS2, V3SubackFailure}},
	},
	{
		name: "5.0 SUBACK with reason string",
		v:    V5,
		wire: bs(0x90, 0x0A, 0x00, 0x0A, 0x05, 0x1F, 0x00, 0x02, 'n', 'o', 0x01, 0xA2),
		want: &Suback{PacketID: 10, Props: Properties{ReasonString: []byte("no")}, Reasons: []ReasonCode{GrantedQoS1, WildcardSubscriptionsNotSupported}},
	},
	{
		// MQTT 3.1.1 section 3.10.3: "a/b" and "c/d".
		name: "3.1.1 UNSUBSCRIBE spec payload example",
		v:    V311,
		wire: bs(0xA2, 0x0C, 0x00, 0x0A, 0x00, 0x03, 'a', '/', 'b', 0x00, 0x03, 'c', '/', 'd'),
		want: &Unsubscribe{PacketID: 10, Filters: [][]byte{[]byte("a/b"), []byte("c/d")}},
	},
	{
		name: "5.0 UNSUBSCRIBE with user property",
		v:    V5,
		wire: bs(0xA2, 0x0D, 0x00, 0x0B, 0x07, 0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', 0x00, 0x01, '#'),
		want: &Unsubscribe{PacketID: 11, Props: Properties{User: []UserProperty{{[]byte("a"), []byte("b")}}}, Filters: [][]byte{[]byte("#")}},
	},
	{
		name: "3.1.1 UNSUBACK",
		v:    V311,
		wire: bs(0xB0, 0x02, 0x00, 0x0A),
		want: &Unsuback{PacketID: 10},
	},
	{
		name: "5.0 UNSUBACK",
		v:    V5,
		wire: bs(0xB0, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x11),
		want: &Unsuback{PacketID: 10, Reasons: []ReasonCode{Success, NoSubscriptionExisted}},
	},
	{name: "3.1.1 PINGREQ", v: V311, wire: bs(0xC0, 0x00), want: &Pingreq{}},
	{name: "5.0 PINGRESP", v: V5, wire: bs(0xD0, 0x00), want: &Pingresp{}},
	{name: "3.1 DISCONNECT", v: V31, wire: bs(0xE0, 0x00), want: &Disconnect{}},
	{name: "5.0 DISCONNECT remaining 0 is normal", v: V5, wire: bs(0xE0, 0x00), want: &Disconnect{}},
	{name: "5.0 DISCONNECT with will", v: V5, wire: bs(0xE0, 0x01, 0x04), want: &Disconnect{Reason: DisconnectWithWill}},
	{
		name: "5.0 DISCONNECT session taken over with properties",
		v:    V5,
		wire: bs(0xE0, 0x0C, 0x8E, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00, 0x1C, 0x00, 0x02, 's', '2'),
		want: &Disconnect{Reason: SessionTakenOver, Props: Properties{Present: 1 << PropSessionExpiry, ServerReference: []byte("s2")}},
	},
	{name: "5.0 AUTH remaining 0 is success", v: V5, wire: bs(0xF0, 0x00), want: &Auth{}},
	{
		name: "5.0 AUTH continue with method and data",
		v:    V5,
		wire: bs(0xF0, 0x0F, 0x18, 0x0D, 0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M', 0x16, 0x00, 0x02, 0x01, 0x02),
		want: &Auth{Reason: ContinueAuthentication, Props: Properties{AuthMethod: []byte("SCRAM"), AuthData: []byte{1, 2}}},
	},
}

func init() {
	for i := range decodeCases {
		c := &decodeCases[i]
		switch c.name {
		case "5.0 CONNECT spec variable header example":
			c.wire = pkt(0x10,
				bs(0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0xCE, 0x00, 0x0A),
				bs(0x05, 0x11, 0x00, 0x00, 0x00, 0x0A),
				str("c1"),
				bs(0x05, 0x18, 0x00, 0x00, 0x00, 0x1E), // will delay interval 30
				str("w/t"), str("bye"), str("u"), str("p"))
			c.want = &Connect{ProtocolName: []byte("MQTT"), Version: V5, CleanStart: true, KeepAlive: 10,
				Props:    Properties{Present: 1 << PropSessionExpiry, SessionExpiry: 10},
				ClientID: []byte("c1"), WillFlag: true, WillQoS: 1,
				WillProps: Properties{Present: 1 << PropWillDelay, WillDelay: 30},
				WillTopic: []byte("w/t"), WillPayload: []byte("bye"),
				UsernameFlag: true, Username: []byte("u"), PasswordFlag: true, Password: []byte("p")}
		case "5.0 SUBSCRIBE with subscription id and all options":
			c.wire = bs(0x82, 0x12, 0x00, 0x0A, 0x02, 0x0B, 0x05,
				0x00, 0x03, 'a', '/', '+', 0x2D,
				0x00, 0x04, 's', '/', '/', '#', 0x00)
			c.want = &Subscribe{PacketID: 10, Props: Properties{SubscriptionIDs: []uint32{5}}, Subscriptions: []Subscription{
				{Filter: []byte("a/+"), QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Filter: []byte("s//#")}}}
		}
	}
}

func TestDecodeSpecExamples(t *testing.T) {
	for _, c := range decodeCases {
		t.Run(c.name, func(t *testing.T) {
			d := &Decoder{Version: c.v}
			got, err := decodeAll(d, c.wire)
			if err != nil {
				t.Fatalf("Decode(% x): %v", c.wire, err)
			}
			samePacket(t, got, c.want)
		})
	}
}

// Encoding what was decoded gives back the same bytes: the examples are in
// the encoder's canonical form.
func TestEncodeSpecExamples(t *testing.T) {
	for _, c := range decodeCases {
		t.Run(c.name, func(t *testing.T) {
			v := c.v
			if con, ok := c.want.(*Connect); ok {
				v = con.Version
			}
			got, err := Append(nil, c.want, v)
			if err != nil {
				t.Fatalf("Append: %v", err)
			}
			want := c.wire
			// The encoder leaves out an empty property block after a reason code.
			if c.name == "5.0 PUBREC reason with empty property block" {
				want = bs(0x50, 0x03, 0x00, 0x09, 0x97)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Append =\n% x\nwant\n% x", got, want)
			}
			if s, ok := c.want.(interface{ Size(Version) int }); ok && s.Size(v) != len(want) {
				t.Fatalf("Size = %d, encoded %d bytes", s.Size(v), len(want))
			}
		})
	}
}

func TestDecodeSetsVersionFromConnect(t *testing.T) {
	for _, v := range []Version{V31, V311, V5} {
		con := &Connect{Version: v, CleanStart: true, ClientID: []byte("x")}
		b, err := con.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		var d Decoder
		if _, err := decodeAll(&d, b); err != nil {
			t.Fatalf("level %d: %v", v, err)
		}
		if d.Version != v {
			t.Fatalf("Decoder.Version = %d after CONNECT level %d", d.Version, v)
		}
	}
}

// Variable byte integer boundaries from MQTT 3.1.1 table 2.4 / MQTT 5.0
// section 1.5.5.
var varIntCases = []struct {
	n    int
	wire []byte
}{
	{0, bs(0x00)},
	{127, bs(0x7F)},
	{128, bs(0x80, 0x01)},
	{16383, bs(0xFF, 0x7F)},
	{16384, bs(0x80, 0x80, 0x01)},
	{2097151, bs(0xFF, 0xFF, 0x7F)},
	{2097152, bs(0x80, 0x80, 0x80, 0x01)},
	{268435455, bs(0xFF, 0xFF, 0xFF, 0x7F)},
}

func TestRemainingLengthBoundaries(t *testing.T) {
	for _, c := range varIntCases {
		if got := AppendVarInt(nil, c.n); !bytes.Equal(got, c.wire) {
			t.Errorf("AppendVarInt(%d) = % x, want % x", c.n, got, c.wire)
		}
		h, n, err := DecodeFixedHeader(cat(bs(0x30), c.wire))
		if err != nil || n != 1+len(c.wire) || h.Remaining != c.n || h.Type != PUBLISH {
			t.Errorf("DecodeFixedHeader(30 % x) = %+v, %d, %v; want remaining %d in %d bytes", c.wire, h, n, err, c.n, 1+len(c.wire))
		}
		if HeaderLen(c.n) != 1+len(c.wire) {
			t.Errorf("HeaderLen(%d) = %d, want %d", c.n, HeaderLen(c.n), 1+len(c.wire))
		}
	}
}

func TestRemainingLengthFiveBytesIsMalformed(t *testing.T) {
	_, _, err := DecodeFixedHeader(bs(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F))
	wantErr(t, err, MalformedPacket, "longer than 4 bytes")
	_, _, err = DecodeFixedHeader(bs(0x30, 0x80, 0x80, 0x80, 0x80, 0x01))
	wantErr(t, err, MalformedPacket, "longer than 4 bytes")
}

func TestFixedHeaderNeedsMoreBytes(t *testing.T) {
	for _, b := range [][]byte{nil, bs(0x30), bs(0x30, 0x80), bs(0x30, 0xFF, 0xFF), bs(0x30, 0xFF, 0xFF, 0xFF)} {
		h, n, err := DecodeFixedHeader(b)
		if n != 0 || err != nil {
			t.Errorf("DecodeFixedHeader(% x) = %+v, %d, %v; want need more bytes", b, h, n, err)
		}
	}
}

// A non-minimal remaining length is accepted: only more than four bytes is
// malformed.
func TestFixedHeaderNonMinimalLength(t *testing.T) {
	h, n, err := DecodeFixedHeader(bs(0xC0, 0x80, 0x00))
	if err != nil || n != 3 || h.Remaining != 0 || h.Type != PINGREQ {
		t.Fatalf("DecodeFixedHeader(c0 80 00) = %+v, %d, %v", h, n, err)
	}
}

// PUBLISH bodies whose remaining length sits on each encoding boundary.
func TestDecodePublishAtLengthBoundaries(t *testing.T) {
	for _, rem := range []int{127, 128, 16383, 16384, 2097151, 2097152} {
		p := &Publish{Topic: []byte("a/b"), Payload: make([]byte, rem-5)}
		b, err := p.Append(nil, V311)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != HeaderLen(rem)+rem || p.Size(V311) != len(b) {
			t.Fatalf("remaining %d: encoded %d bytes, Size %d", rem, len(b), p.Size(V311))
		}
		got, err := decodeAll(&Decoder{Version: V311}, b)
		if err != nil {
			t.Fatalf("remaining %d: %v", rem, err)
		}
		if n := len(got.(*Publish).Payload); n != rem-5 {
			t.Fatalf("remaining %d: payload %d bytes", rem, n)
		}
	}
}

func TestMaxPacketSize(t *testing.T) {
	p := &Publish{Topic: []byte("a/b"), Payload: make([]byte, 95)} // 100 bytes remaining, 102 in all
	b, _ := p.Append(nil, V5)
	if len(b) != 103 {
		t.Fatalf("test packet is %d bytes", len(b))
	}
	d := &Decoder{Version: V5, MaxPacketSize: 103}
	if _, err := decodeAll(d, b); err != nil {
		t.Fatalf("packet of exactly MaxPacketSize: %v", err)
	}
	d.MaxPacketSize = 102
	_, err := decodeAll(d, b)
	wantErr(t, err, PacketTooLarge, "maximum packet size 102")
	h, n, _ := DecodeFixedHeader(b)
	wantErr(t, d.CheckSize(h, n), PacketTooLarge, "103 bytes")
}

func wantErr(t testing.TB, err error, reason ReasonCode, rule string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want *Error with reason %#x and rule %q", err, reason, rule)
	}
	if e.Reason != reason || !bytes.Contains([]byte(e.Rule), []byte(rule)) {
		t.Fatalf("error = reason %#x rule %q, want reason %#x rule containing %q", e.Reason, e.Rule, reason, rule)
	}
}
