package packet

import (
	"bytes"
	"testing"
)

// The encoders refuse what the caller controls and the peer would reject,
// and append nothing when they do.
var encodeRejects = []struct {
	name   string
	p      Packet
	v      Version
	reason ReasonCode
	rule   string
}{
	{"unknown version", &Pingreq{}, 6, UnsupportedProtocolVersion, "protocol level 6"},
	{"CONNECT level 6", &Connect{Version: 6, ClientID: []byte("c")}, 0, UnsupportedProtocolVersion, "protocol level 6"},
	{"CONNECT name does not match level", &Connect{Version: V311, ProtocolName: []byte("MQIsdp"), ClientID: []byte("c")}, 0, UnsupportedProtocolVersion, "[MQTT-3.1.2-1]"},
	{"CONNECT will QoS 3", &Connect{Version: V311, CleanStart: true, WillFlag: true, WillQoS: 3, WillTopic: []byte("w")}, 0, MalformedPacket, "[MQTT-3.1.2-14]"},
	{"CONNECT will QoS without will", &Connect{Version: V5, WillQoS: 1}, 0, MalformedPacket, "[MQTT-3.1.2-11]"},
	{"CONNECT will retain without will", &Connect{Version: V5, WillRetain: true}, 0, MalformedPacket, "[MQTT-3.1.2-13]"},
	{"3.1.1 CONNECT password without user name", &Connect{Version: V311, CleanStart: true, PasswordFlag: true}, 0, MalformedPacket, "[MQTT-3.1.2-22]"},
	{"CONNECT client id not UTF-8", &Connect{Version: V5, ClientID: []byte{0xFF}}, 0, MalformedPacket, "[MQTT-1.5.4-1]"},
	{"3.1.1 CONNECT empty client id without clean session", &Connect{Version: V311}, 0, ClientIdentifierNotValid, "[MQTT-3.1.3-8]"},
	{"3.1 CONNECT empty client id", &Connect{Version: V31, CleanStart: true}, 0, ClientIdentifierNotValid, "1 to 23 characters"},
	{"CONNECT will topic with wildcard", &Connect{Version: V311, CleanStart: true, WillFlag: true, WillTopic: []byte("a/+")}, 0, TopicNameInvalid, "[MQTT-3.3.2-2]"},
	{"3.1.1 CONNECT with properties", &Connect{Version: V311, CleanStart: true, Props: Properties{AuthMethod: []byte("x")}}, 0, ProtocolError, "need MQTT 5.0"},
	{"5.0 CONNECT topic alias property", &Connect{Version: V5, Props: Properties{Present: 1 << PropTopicAlias, TopicAlias: 1}}, 0, MalformedPacket, "property 0x23 is not allowed in CONNECT"},
	{"5.0 CONNECT receive maximum 0", &Connect{Version: V5, Props: Properties{Present: 1 << PropReceiveMaximum}}, 0, ProtocolError, "receive maximum is 0"},
	{"5.0 CONNECT session expiry in will", &Connect{Version: V5, WillFlag: true, WillTopic: []byte("w"), WillProps: Properties{Present: 1 << PropSessionExpiry}}, 0, MalformedPacket, "not allowed in will properties"},
	{"5.0 CONNECT auth data without method", &Connect{Version: V5, Props: Properties{AuthData: []byte{1}}}, 0, ProtocolError, "authentication data without authentication method"},

	{"3.1.1 CONNACK 5.0 reason", &Connack{Reason: NotAuthorized}, V311, ProtocolError, "use ConnackCodeV3"},
	{"CONNACK session present on refusal", &Connack{SessionPresent: true, Reason: V3RefusedNotAuthorized}, V311, ProtocolError, "[MQTT-3.2.2-4]"},
	{"5.0 CONNACK reason not for CONNACK", &Connack{Reason: GrantedQoS1}, V5, ProtocolError, "[MQTT-3.2.2-8]"},
	{"5.0 CONNACK maximum QoS 2", &Connack{Props: Properties{Present: 1 << PropMaximumQoS, MaximumQoS: 2}}, V5, ProtocolError, "property 0x24 value 2"},

	{"PUBLISH QoS 3", &Publish{QoS: 3, PacketID: 1, Topic: []byte("t")}, V311, MalformedPacket, "[MQTT-3.3.1-4]"},
	{"PUBLISH DUP at QoS 0", &Publish{Dup: true, Topic: []byte("t")}, V311, ProtocolError, "[MQTT-3.3.1-2]"},
	{"PUBLISH QoS 1 packet id 0", &Publish{QoS: 1, Topic: []byte("t")}, V5, ProtocolError, "[MQTT-2.3.1-1]"},
	{"PUBLISH topic with wildcard", &Publish{Topic: []byte("a/#")}, V311, TopicNameInvalid, "[MQTT-3.3.2-2]"},
	{"PUBLISH empty topic", &Publish{}, V311, TopicNameInvalid, "[MQTT-4.7.3-1]"},
	{"3.1.1 PUBLISH empty topic with alias", &Publish{Props: Properties{Present: 1 << PropTopicAlias, TopicAlias: 1}}, V311, TopicNameInvalid, "[MQTT-4.7.3-1]"},
	{"5.0 PUBLISH topic alias 0", &Publish{Topic: []byte("t"), Props: Properties{Present: 1 << PropTopicAlias}}, V5, ProtocolError, "[MQTT-3.3.2-8]"},
	{"5.0 PUBLISH reason string", &Publish{Topic: []byte("t"), Props: Properties{ReasonString: []byte("r")}}, V5, MalformedPacket, "property 0x1f is not allowed in PUBLISH"},
	{"5.0 PUBLISH subscription id 0", &Publish{Topic: []byte("t"), Props: Properties{SubscriptionIDs: []uint32{0}}}, V5, ProtocolError, "subscription identifier 0"},
	{"5.0 PUBLISH subscription id too large", &Publish{Topic: []byte("t"), Props: Properties{SubscriptionIDs: []uint32{268435456}}}, V5, ProtocolError, "subscription identifier 268435456"},
	{"5.0 PUBLISH content type not UTF-8", &Publish{Topic: []byte("t"), Props: Properties{ContentType: []byte{0xC0}}}, V5, MalformedPacket, "property 0x03"},
	{"5.0 PUBLISH response topic with wildcard", &Publish{Topic: []byte("t"), Props: Properties{ResponseTopic: []byte("r/#")}}, V5, ProtocolError, "[MQTT-3.3.2-14]"},

	{"Ack of kind PUBLISH", &Ack{Kind: PUBLISH, PacketID: 1}, V311, ProtocolError, "is not PUBACK, PUBREC, PUBREL or PUBCOMP"},
	{"PUBACK packet id 0", &Ack{Kind: PUBACK}, V311, ProtocolError, "PUBACK with packet identifier 0"},
	{"3.1.1 PUBREC with failure reason", &Ack{Kind: PUBREC, PacketID: 1, Reason: QuotaExceeded}, V311, ProtocolError, "cannot be sent in MQTT 3.1.1"},
	{"5.0 PUBCOMP with PUBACK reason", &Ack{Kind: PUBCOMP, PacketID: 1, Reason: QuotaExceeded}, V5, ProtocolError, "0x97 is not defined for PUBCOMP"},
	{"3.1.1 PUBACK with properties", &Ack{Kind: PUBACK, PacketID: 1, Props: Properties{ReasonString: []byte("r")}}, V311, ProtocolError, "need MQTT 5.0"},

	{"SUBSCRIBE packet id 0", &Subscribe{Subscriptions: []Subscription{{Filter: []byte("a")}}}, V311, ProtocolError, "SUBSCRIBE with packet identifier 0"},
	{"SUBSCRIBE without filters", &Subscribe{PacketID: 1}, V311, ProtocolError, "[MQTT-3.8.3-3]"},
	{"SUBSCRIBE invalid filter", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: []byte("a/#/b")}}}, V311, TopicFilterInvalid, "[MQTT-4.7.1-2]"},
	{"SUBSCRIBE QoS 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: []byte("a"), QoS: 3}}}, V5, MalformedPacket, "requested QoS 3"},
	{"3.1.1 SUBSCRIBE no local", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: []byte("a"), NoLocal: true}}}, V311, ProtocolError, "need MQTT 5.0"},
	{"5.0 SUBSCRIBE retain handling 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: []byte("a"), RetainHandling: 3}}}, V5, ProtocolError, "retain handling 3"},
	{"5.0 SUBSCRIBE no local on shared", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: []byte("$share/g/a"), NoLocal: true}}}, V5, ProtocolError, "[MQTT-3.8.3-4]"},
	{"5.0 SUBSCRIBE two subscription ids", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: []byte("a")}}, Props: Properties{SubscriptionIDs: []uint32{1, 2}}}, V5, ProtocolError, "at most 1 allowed"},

	{"SUBACK without reasons", &Suback{PacketID: 1}, V311, ProtocolError, "SUBACK without a return code"},
	{"3.1.1 SUBACK 5.0 reason", &Suback{PacketID: 1, Reasons: []ReasonCode{NotAuthorized}}, V311, ProtocolError, "[MQTT-3.9.3-2]"},
	{"UNSUBSCRIBE without filters", &Unsubscribe{PacketID: 1}, V5, ProtocolError, "[MQTT-3.10.3-2]"},
	{"UNSUBSCRIBE invalid filter", &Unsubscribe{PacketID: 1, Filters: [][]byte{[]byte("a+")}}, V311, TopicFilterInvalid, "[MQTT-4.7.1-3]"},
	{"5.0 UNSUBACK without reasons", &Unsuback{PacketID: 1}, V5, ProtocolError, "UNSUBACK without a reason code"},
	{"5.0 UNSUBACK reason not for UNSUBACK", &Unsuback{PacketID: 1, Reasons: []ReasonCode{GrantedQoS1}}, V5, ProtocolError, "[MQTT-3.11.3-2]"},
	{"3.1.1 DISCONNECT with reason", &Disconnect{Reason: ServerShuttingDown}, V311, ProtocolError, "cannot be sent in MQTT 3.1.1"},
	{"5.0 DISCONNECT reason not for DISCONNECT", &Disconnect{Reason: GrantedQoS1}, V5, ProtocolError, "[MQTT-3.14.2-1]"},
	{"3.1.1 AUTH", &Auth{}, V311, ProtocolError, "AUTH cannot be sent in MQTT 3.1.1"},
	{"5.0 AUTH reason not for AUTH", &Auth{Reason: NotAuthorized}, V5, ProtocolError, "[MQTT-3.15.2-1]"},
	{"nil packet", nil, V5, ProtocolError, "nil packet"},
}

func TestEncodeRejects(t *testing.T) {
	for _, c := range encodeRejects {
		t.Run(c.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := Append(dst, c.p, c.v)
			wantErr(t, err, c.reason, c.rule)
			if !bytes.Equal(got, []byte("keep")) {
				t.Fatalf("Append wrote % x on error", got)
			}
		})
	}
}

// A PUBLISH forwarded from an MQTT 5.0 client to a 3.1.1 subscriber loses its
// properties: 3.1.1 has nowhere to put them.
func TestEncodePublishDropsPropertiesBefore5(t *testing.T) {
	p := benchPublish(V5)
	got, err := p.Append(nil, V311)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := (&Publish{QoS: p.QoS, PacketID: p.PacketID, Topic: p.Topic, Payload: p.Payload}).Append(nil, V311)
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x\nwant % x", got, want)
	}
}

// MQTT 5.0 acknowledgements shrink to what they need (section 3.4.2.1).
func TestEncodeAckShortForms(t *testing.T) {
	for _, c := range []struct {
		a    Ack
		want []byte
	}{
		{Ack{Kind: PUBACK, PacketID: 1}, bs(0x40, 0x02, 0x00, 0x01)},
		{Ack{Kind: PUBREL, PacketID: 1}, bs(0x62, 0x02, 0x00, 0x01)},
		{Ack{Kind: PUBREC, PacketID: 1, Reason: UnspecifiedError}, bs(0x50, 0x03, 0x00, 0x01, 0x80)},
		{Ack{Kind: PUBCOMP, PacketID: 1, Props: Properties{ReasonString: []byte{}}}, bs(0x70, 0x07, 0x00, 0x01, 0x00, 0x03, 0x1F, 0x00, 0x00)},
	} {
		got, err := c.a.Append(nil, V5)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%v: got % x, %v; want % x", c.a.Kind, got, err, c.want)
		}
	}
	for _, c := range []struct {
		d    Disconnect
		want []byte
	}{
		{Disconnect{}, bs(0xE0, 0x00)},
		{Disconnect{Reason: ServerShuttingDown}, bs(0xE0, 0x01, 0x8B)},
		{Disconnect{Props: Properties{Present: 1 << PropSessionExpiry}}, bs(0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 0)},
	} {
		got, err := c.d.Append(nil, V5)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("DISCONNECT %#x: got % x, %v; want % x", c.d.Reason, got, err, c.want)
		}
	}
}

// 3.1.1 UNSUBACK has no reason codes; the encoder leaves them out.
func TestEncodeUnsubackBefore5(t *testing.T) {
	got, err := (&Unsuback{PacketID: 10, Reasons: []ReasonCode{Success}}).Append(nil, V311)
	if err != nil || !bytes.Equal(got, bs(0xB0, 0x02, 0x00, 0x0A)) {
		t.Fatalf("got % x, %v", got, err)
	}
}

func TestValidTopicName(t *testing.T) {
	for _, ok := range []string{"a", "/", "a/b", "$SYS/x", "sport/tennis/player1", " ", "水/🙂"} {
		if err := ValidTopicName([]byte(ok)); err != nil {
			t.Errorf("ValidTopicName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "+", "#", "a/+/b", "a/#", "a\x00b", string(make([]byte, 65536))} {
		err := ValidTopicName([]byte(bad))
		if e, ok := err.(*Error); !ok || e.Reason != TopicNameInvalid {
			t.Errorf("ValidTopicName(%.10q) = %v, want TopicNameInvalid", bad, err)
		}
	}
}

// The topic filter examples of MQTT 3.1.1 section 4.7.1 and the shared
// subscription form of MQTT 5.0 section 4.8.2.
func TestValidTopicFilter(t *testing.T) {
	for _, ok := range []string{"#", "sport/#", "sport/tennis/#", "+", "+/tennis/#", "sport/+/player1", "/+", "+/+", "sport/", "/",
		"$share/g/#", "$share/group/a/+/b", "$share", "$sharex/a", "share/g/a"} {
		if err := ValidTopicFilter([]byte(ok)); err != nil {
			t.Errorf("ValidTopicFilter(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "sport/tennis#", "sport/tennis/#/ranking", "sport+", "a/+b", "##", "#/",
		"$share/", "$share/g", "$share//a", "$share/g/", "$share/g#/a", "$share/+/a", "a\x00"} {
		err := ValidTopicFilter([]byte(bad))
		if e, ok := err.(*Error); !ok || e.Reason != TopicFilterInvalid {
			t.Errorf("ValidTopicFilter(%q) = %v, want TopicFilterInvalid", bad, err)
		}
	}
}

func TestParseShared(t *testing.T) {
	for _, c := range []struct{ in, group, filter string }{
		{"$share/g/a/b", "g", "a/b"},
		{"$share/consumer1/sport/tennis/+", "consumer1", "sport/tennis/+"},
		{"$share/g/", "g", ""},
	} {
		g, f, ok := ParseShared([]byte(c.in))
		if !ok || string(g) != c.group || string(f) != c.filter {
			t.Errorf("ParseShared(%q) = %q, %q, %v", c.in, g, f, ok)
		}
	}
	for _, in := range []string{"a/b", "$share", "$share/g", "$SHARE/g/a"} {
		if _, _, ok := ParseShared([]byte(in)); ok {
			t.Errorf("ParseShared(%q) ok", in)
		}
	}
}

func TestValidUTF8(t *testing.T) {
	for _, ok := range []string{"", "abc", "\uFEFF", "é水🙂", "\u007F"} {
		if err := ValidUTF8([]byte(ok)); err != nil {
			t.Errorf("ValidUTF8(%q) = %v", ok, err)
		}
	}
	for _, bad := range [][]byte{{0x00}, {0xC0, 0x80}, {0xED, 0xA0, 0x80}, {0xED, 0xBF, 0xBF}, {0xFF}, {0xE2, 0x82}, {0xF4, 0x90, 0x80, 0x80}} {
		err := ValidUTF8(bad)
		if e, ok := err.(*Error); !ok || e.Reason != MalformedPacket {
			t.Errorf("ValidUTF8(% x) = %v, want MalformedPacket", bad, err)
		}
	}
}

// A refusal decided in MQTT 5.0 terms reaches a 3.1.1 client as the nearest
// return code of MQTT 3.1.1 table 3.1.
func TestConnackCodeV3(t *testing.T) {
	for r, want := range map[ReasonCode]ReasonCode{
		Success:                    V3Accepted,
		UnsupportedProtocolVersion: V3RefusedProtocolVersion,
		ClientIdentifierNotValid:   V3RefusedIdentifierRejected,
		ServerBusy:                 V3RefusedServerUnavailable,
		BadUserNameOrPassword:      V3RefusedBadUsernamePassword,
		NotAuthorized:              V3RefusedNotAuthorized,
		Banned:                     V3RefusedNotAuthorized,
	} {
		got := ConnackCodeV3(r)
		if got != want {
			t.Errorf("ConnackCodeV3(%#x) = %#x, want %#x", r, got, want)
		}
		b, err := (&Connack{Reason: got}).Append(nil, V311)
		if err != nil || !bytes.Equal(b, bs(0x20, 0x02, 0x00, byte(want))) {
			t.Errorf("CONNACK %#x = % x, %v", want, b, err)
		}
	}
}

func TestPacketTypes(t *testing.T) {
	for _, c := range []struct {
		p    Packet
		want Type
		name string
	}{
		{&Connect{}, CONNECT, "CONNECT"}, {&Connack{}, CONNACK, "CONNACK"}, {&Publish{}, PUBLISH, "PUBLISH"},
		{&Ack{Kind: PUBREL}, PUBREL, "PUBREL"}, {&Subscribe{}, SUBSCRIBE, "SUBSCRIBE"}, {&Suback{}, SUBACK, "SUBACK"},
		{&Unsubscribe{}, UNSUBSCRIBE, "UNSUBSCRIBE"}, {&Unsuback{}, UNSUBACK, "UNSUBACK"}, {&Pingreq{}, PINGREQ, "PINGREQ"},
		{&Pingresp{}, PINGRESP, "PINGRESP"}, {&Disconnect{}, DISCONNECT, "DISCONNECT"}, {&Auth{}, AUTH, "AUTH"},
	} {
		if c.p.Type() != c.want || c.want.String() != c.name {
			t.Errorf("%T: Type() = %v (%q), want %v", c.p, c.p.Type(), c.p.Type().String(), c.name)
		}
	}
	if s := Type(16).String(); s != "type 16" {
		t.Errorf("Type(16).String() = %q", s)
	}
}
