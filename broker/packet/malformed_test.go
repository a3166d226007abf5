package packet

import "testing"

// connect5 assembles an MQTT 5.0 CONNECT with the given flags, property block
// and payload.
func connect5(flags byte, props []byte, payload ...[]byte) []byte {
	return pkt(0x10, str("MQTT"), bs(0x05, flags, 0x00, 0x3C), props, cat(payload...))
}

func connect4(flags byte, payload ...[]byte) []byte {
	return pkt(0x10, str("MQTT"), bs(0x04, flags, 0x00, 0x3C), cat(payload...))
}

// One row per rule the decoder enforces: the reason it reports and a piece of
// the rule it names.
var malformedCases = []struct {
	name   string
	v      Version
	wire   []byte
	reason ReasonCode
	rule   string
}{
	// Fixed header.
	{"reserved packet type 0", V311, bs(0x00, 0x00), MalformedPacket, "packet type 0 is reserved"},
	{"PUBLISH QoS 3", V311, bs(0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01), MalformedPacket, "[MQTT-3.3.1-4]"},
	{"PUBREL flags 0000", V311, bs(0x60, 0x02, 0x00, 0x01), MalformedPacket, "[MQTT-3.6.1-1]"},
	{"SUBSCRIBE flags 0000", V311, bs(0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x00), MalformedPacket, "[MQTT-3.8.1-1]"},
	{"UNSUBSCRIBE flags 0011", V311, bs(0xA3, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'), MalformedPacket, "[MQTT-3.10.1-1]"},
	{"PUBACK flags 0001", V311, bs(0x41, 0x02, 0x00, 0x01), MalformedPacket, "[MQTT-2.2.2-2]"},
	{"CONNECT flags 0010", 0, bs(0x12, 0x00), MalformedPacket, "[MQTT-2.2.2-2]"},
	{"DISCONNECT flags 1000", V5, bs(0xE8, 0x00), MalformedPacket, "[MQTT-2.2.2-2]"},
	{"remaining length of 5 bytes", V311, bs(0x30, 0x80, 0x80, 0x80, 0x80, 0x01), MalformedPacket, "longer than 4 bytes"},

	// Remaining length against contents.
	{"bytes after PUBACK", V311, bs(0x40, 0x03, 0x00, 0x01, 0x00), MalformedPacket, "after the end of PUBACK"},
	{"bytes after CONNECT", 0, connect4(0x02, str("c"), bs(0x00)), MalformedPacket, "after the end of CONNECT"},
	{"bytes after 5.0 DISCONNECT properties", V5, bs(0xE0, 0x03, 0x00, 0x00, 0x00), MalformedPacket, "after the end of DISCONNECT"},
	{"topic overruns PUBLISH", V311, bs(0x30, 0x03, 0x00, 0x05, 'a'), MalformedPacket, "topic name overruns"},
	{"packet id missing in QoS 1 PUBLISH", V311, bs(0x32, 0x04, 0x00, 0x02, 'a', 'b'), MalformedPacket, "packet identifier overruns"},
	{"PUBACK too short", V311, bs(0x40, 0x01, 0x00), MalformedPacket, "packet identifier overruns"},
	{"property length overruns", V5, bs(0x30, 0x05, 0x00, 0x01, 'a', 0x09, 0x01), MalformedPacket, "property length 9"},
	{"property value overruns", V5, bs(0x30, 0x06, 0x00, 0x01, 'a', 0x02, 0x02, 0x00), MalformedPacket, "property value overruns"},
	{"PINGREQ with a body", V311, bs(0xC0, 0x01, 0x00), MalformedPacket, "PINGREQ remaining length 1"},
	{"PINGRESP with a body", V5, bs(0xD0, 0x01, 0x00), MalformedPacket, "PINGRESP remaining length 1"},
	{"3.1.1 DISCONNECT with a body", V311, bs(0xE0, 0x01, 0x00), MalformedPacket, "after the end of DISCONNECT"},
	{"3.1.1 UNSUBACK with reason codes", V311, bs(0xB0, 0x03, 0x00, 0x01, 0x00), MalformedPacket, "after the end of UNSUBACK"},

	// Connection state.
	{"PUBLISH before CONNECT", 0, bs(0x30, 0x03, 0x00, 0x01, 'a'), ProtocolError, "[MQTT-3.1.0-1]"},
	{"AUTH in 3.1.1", V311, bs(0xF0, 0x00), ProtocolError, "AUTH on an MQTT 3.1.1 connection"},
	{"AUTH in 3.1", V31, bs(0xF0, 0x00), ProtocolError, "AUTH on an MQTT 3.1 connection"},

	// CONNECT.
	{"CONNECT protocol name MQTX", 0, pkt(0x10, str("MQTX"), bs(0x04, 0x02, 0x00, 0x3C), str("c")), UnsupportedProtocolVersion, "[MQTT-3.1.2-1]"},
	{"CONNECT MQTT level 6", 0, pkt(0x10, str("MQTT"), bs(0x06, 0x02, 0x00, 0x3C), str("c")), UnsupportedProtocolVersion, "[MQTT-3.1.2-2] protocol level 6"},
	{"CONNECT MQTT level 3", 0, pkt(0x10, str("MQTT"), bs(0x03, 0x02, 0x00, 0x3C), str("c")), UnsupportedProtocolVersion, "[MQTT-3.1.2-2] protocol level 3"},
	{"CONNECT MQIsdp level 4", 0, pkt(0x10, str("MQIsdp"), bs(0x04, 0x02, 0x00, 0x3C), str("c")), UnsupportedProtocolVersion, "[MQTT-3.1.2-2] protocol level 4"},
	{"CONNECT reserved flag", 0, connect4(0x03, str("c")), MalformedPacket, "[MQTT-3.1.2-3]"},
	{"CONNECT will QoS 3", 0, connect4(0x1E, str("c"), str("w"), str("m")), MalformedPacket, "[MQTT-3.1.2-14]"},
	{"CONNECT will QoS without will flag", 0, connect4(0x0A, str("c")), MalformedPacket, "[MQTT-3.1.2-13]"},
	{"CONNECT will retain without will flag", 0, connect4(0x22, str("c")), MalformedPacket, "[MQTT-3.1.2-15]"},
	{"3.1.1 CONNECT password without user name", 0, connect4(0x42, str("c"), str("p")), MalformedPacket, "[MQTT-3.1.2-22]"},
	{"CONNECT client id not UTF-8", 0, connect4(0x02, bs(0x00, 0x02, 0xC3, 0x28)), MalformedPacket, "[MQTT-1.5.4-1]"},
	{"CONNECT client id with U+0000", 0, connect4(0x02, bs(0x00, 0x02, 'a', 0x00)), MalformedPacket, "[MQTT-1.5.4-2]"},
	{"CONNECT client id with a surrogate", 0, connect4(0x02, bs(0x00, 0x03, 0xED, 0xA0, 0x80)), MalformedPacket, "[MQTT-1.5.4-1]"},
	{"3.1.1 CONNECT empty client id without clean session", 0, connect4(0x00, str("")), ClientIdentifierNotValid, "[MQTT-3.1.3-8]"},
	{"CONNECT will topic with wildcard", 0, connect4(0x06, str("c"), str("a/#"), str("m")), TopicNameInvalid, "[MQTT-3.3.2-2]"},
	{"5.0 CONNECT topic alias property", 0, connect5(0x02, bs(0x03, 0x23, 0x00, 0x01), str("c")), MalformedPacket, "property 0x23 is not allowed in CONNECT"},
	{"5.0 CONNECT will delay outside will properties", 0, connect5(0x02, bs(0x05, 0x18, 0, 0, 0, 1), str("c")), MalformedPacket, "property 0x18 is not allowed in CONNECT"},
	{"5.0 CONNECT session expiry in will properties", 0, connect5(0x06, bs(0x00), str("c"), bs(0x05, 0x11, 0, 0, 0, 1), str("w"), str("m")), MalformedPacket, "property 0x11 is not allowed in will properties"},
	{"5.0 CONNECT unknown property", 0, connect5(0x02, bs(0x02, 0x7F, 0x00), str("c")), MalformedPacket, "unknown property identifier 0x7f"},
	{"5.0 CONNECT receive maximum 0", 0, connect5(0x02, bs(0x03, 0x21, 0x00, 0x00), str("c")), ProtocolError, "receive maximum is 0"},
	{"5.0 CONNECT maximum packet size 0", 0, connect5(0x02, bs(0x05, 0x27, 0, 0, 0, 0), str("c")), ProtocolError, "maximum packet size is 0"},
	{"5.0 CONNECT request problem information 2", 0, connect5(0x02, bs(0x02, 0x17, 0x02), str("c")), ProtocolError, "property 0x17 value 2"},
	{"5.0 CONNECT request response information 2", 0, connect5(0x02, bs(0x02, 0x19, 0x02), str("c")), ProtocolError, "property 0x19 value 2"},
	{"5.0 CONNECT duplicate session expiry", 0, connect5(0x02, bs(0x0A, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2), str("c")), ProtocolError, "property 0x11 appears more than once"},
	{"5.0 CONNECT authentication data without method", 0, connect5(0x02, bs(0x04, 0x16, 0x00, 0x01, 0xAA), str("c")), ProtocolError, "authentication data without authentication method"},
	{"5.0 CONNECT user property not UTF-8", 0, connect5(0x02, bs(0x07, 0x26, 0x00, 0x01, 0xFF, 0x00, 0x01, 'v'), str("c")), MalformedPacket, "user property name"},
	{"5.0 CONNECT will payload not UTF-8 with format indicator", 0, connect5(0x06, bs(0x00), str("c"), bs(0x02, 0x01, 0x01), str("w"), bs(0x00, 0x01, 0xFF)), PayloadFormatInvalid, "will payload format indicator 1"},

	// CONNACK.
	{"CONNACK reserved acknowledge flag", V311, bs(0x20, 0x02, 0x02, 0x00), MalformedPacket, "[MQTT-3.2.2-1]"},
	{"3.1.1 CONNACK return code 6", V311, bs(0x20, 0x02, 0x00, 0x06), MalformedPacket, "return code 6 is reserved"},
	{"CONNACK session present on refusal", V311, bs(0x20, 0x02, 0x01, 0x05), ProtocolError, "[MQTT-3.2.2-4]"},
	{"5.0 CONNACK reason not for CONNACK", V5, bs(0x20, 0x03, 0x00, 0x10, 0x00), ProtocolError, "0x10 is not defined for CONNACK"},
	{"5.0 CONNACK maximum QoS 2", V5, bs(0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02), ProtocolError, "property 0x24 value 2"},
	{"5.0 CONNACK retain available 2", V5, bs(0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x02), ProtocolError, "property 0x25 value 2"},
	{"5.0 CONNACK shared subscription available 3", V5, bs(0x20, 0x05, 0x00, 0x00, 0x02, 0x2A, 0x03), ProtocolError, "property 0x2a value 3"},
	{"5.0 CONNACK missing property length", V5, bs(0x20, 0x02, 0x00, 0x00), MalformedPacket, "property length in CONNACK overruns"},

	// PUBLISH.
	{"PUBLISH DUP on QoS 0", V311, bs(0x38, 0x03, 0x00, 0x01, 'a'), ProtocolError, "[MQTT-3.3.1-2]"},
	{"PUBLISH packet id 0", V311, bs(0x32, 0x05, 0x00, 0x01, 'a', 0x00, 0x00), ProtocolError, "[MQTT-2.3.1-1]"},
	{"PUBLISH topic with +", V311, bs(0x30, 0x05, 0x00, 0x03, 'a', '/', '+'), TopicNameInvalid, "[MQTT-3.3.2-2]"},
	{"PUBLISH topic with #", V5, bs(0x30, 0x04, 0x00, 0x01, '#', 0x00), TopicNameInvalid, "[MQTT-3.3.2-2]"},
	{"3.1.1 PUBLISH empty topic", V311, bs(0x30, 0x02, 0x00, 0x00), TopicNameInvalid, "[MQTT-4.7.3-1]"},
	{"5.0 PUBLISH empty topic without alias", V5, bs(0x30, 0x03, 0x00, 0x00, 0x00), ProtocolError, "3.3.2.1"},
	{"PUBLISH topic not UTF-8", V311, bs(0x30, 0x03, 0x00, 0x01, 0x80), MalformedPacket, "[MQTT-1.5.4-1]"},
	{"5.0 PUBLISH topic alias 0", V5, bs(0x30, 0x07, 0x00, 0x01, 'a', 0x03, 0x23, 0x00, 0x00), ProtocolError, "[MQTT-3.3.2-8]"},
	{"5.0 PUBLISH duplicate topic alias", V5, bs(0x30, 0x0A, 0x00, 0x01, 'a', 0x06, 0x23, 0x00, 0x01, 0x23, 0x00, 0x02), ProtocolError, "property 0x23 appears more than once"},
	{"5.0 PUBLISH payload format 2", V5, bs(0x30, 0x06, 0x00, 0x01, 'a', 0x02, 0x01, 0x02), ProtocolError, "property 0x01 value 2"},
	{"5.0 PUBLISH payload not UTF-8 with format indicator", V5, bs(0x30, 0x08, 0x00, 0x01, 'a', 0x02, 0x01, 0x01, 0xC0, 0xAF), PayloadFormatInvalid, "payload format indicator 1"},
	{"5.0 PUBLISH subscription id 0", V5, bs(0x30, 0x06, 0x00, 0x01, 'a', 0x02, 0x0B, 0x00), ProtocolError, "subscription identifier 0"},
	{"5.0 PUBLISH response topic with wildcard", V5, bs(0x30, 0x09, 0x00, 0x01, 'a', 0x05, 0x08, 0x00, 0x02, 'r', '+'), ProtocolError, "response topic"},
	{"5.0 PUBLISH reason string property", V5, bs(0x30, 0x08, 0x00, 0x01, 'a', 0x04, 0x1F, 0x00, 0x01, 'x'), MalformedPacket, "property 0x1f is not allowed in PUBLISH"},
	{"5.0 PUBLISH duplicate message expiry", V5, bs(0x30, 0x0E, 0x00, 0x01, 'a', 0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1), ProtocolError, "property 0x02 appears more than once"},

	// SUBSCRIBE.
	{"SUBSCRIBE without filters", V311, bs(0x82, 0x02, 0x00, 0x01), ProtocolError, "[MQTT-3.8.3-3]"},
	{"5.0 SUBSCRIBE without filters", V5, bs(0x82, 0x03, 0x00, 0x01, 0x00), ProtocolError, "[MQTT-3.8.3-3]"},
	{"SUBSCRIBE packet id 0", V311, bs(0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 'a', 0x00), ProtocolError, "[MQTT-2.3.1-1]"},
	{"SUBSCRIBE # not last", V311, pkt(0x82, bs(0x00, 0x01), str("a/#/b"), bs(0x00)), TopicFilterInvalid, "[MQTT-4.7.1-2]"},
	{"SUBSCRIBE # not a whole level", V311, pkt(0x82, bs(0x00, 0x01), str("a#"), bs(0x00)), TopicFilterInvalid, "[MQTT-4.7.1-2]"},
	{"SUBSCRIBE + not a whole level", V311, pkt(0x82, bs(0x00, 0x01), str("a/b+"), bs(0x00)), TopicFilterInvalid, "[MQTT-4.7.1-3]"},
	{"SUBSCRIBE empty filter", V311, pkt(0x82, bs(0x00, 0x01), str(""), bs(0x00)), TopicFilterInvalid, "[MQTT-4.7.3-1]"},
	{"SUBSCRIBE filter not UTF-8", V311, pkt(0x82, bs(0x00, 0x01), bs(0x00, 0x01, 0xFE), bs(0x00)), MalformedPacket, "[MQTT-1.5.4-1]"},
	{"SUBSCRIBE shared with empty group", V5, pkt(0x82, bs(0x00, 0x01, 0x00), str("$share//a"), bs(0x00)), TopicFilterInvalid, "[MQTT-4.8.2-1]"},
	{"SUBSCRIBE shared group with wildcard", V5, pkt(0x82, bs(0x00, 0x01, 0x00), str("$share/g+/a"), bs(0x00)), TopicFilterInvalid, "[MQTT-4.8.2-2]"},
	{"SUBSCRIBE shared without filter", V5, pkt(0x82, bs(0x00, 0x01, 0x00), str("$share/g"), bs(0x00)), TopicFilterInvalid, "[MQTT-4.8.2-2]"},
	{"3.1.1 SUBSCRIBE requested QoS 3", V311, pkt(0x82, bs(0x00, 0x01), str("a"), bs(0x03)), MalformedPacket, "[MQTT-3-8.3-4] requested QoS 3"},
	{"5.0 SUBSCRIBE maximum QoS 3", V5, pkt(0x82, bs(0x00, 0x01, 0x00), str("a"), bs(0x03)), ProtocolError, "maximum QoS 3"},
	{"3.1.1 SUBSCRIBE reserved option bits", V311, pkt(0x82, bs(0x00, 0x01), str("a"), bs(0x04)), MalformedPacket, "[MQTT-3-8.3-4] reserved subscription option bits 2-7"},
	{"5.0 SUBSCRIBE reserved option bits", V5, pkt(0x82, bs(0x00, 0x01, 0x00), str("a"), bs(0x40)), MalformedPacket, "[MQTT-3.8.3-5]"},
	{"5.0 SUBSCRIBE retain handling 3", V5, pkt(0x82, bs(0x00, 0x01, 0x00), str("a"), bs(0x30)), ProtocolError, "retain handling 3"},
	{"5.0 SUBSCRIBE no local on shared subscription", V5, pkt(0x82, bs(0x00, 0x01, 0x00), str("$share/g/a"), bs(0x04)), ProtocolError, "[MQTT-3.8.3-4] no local on shared"},
	{"5.0 SUBSCRIBE subscription id 0", V5, pkt(0x82, bs(0x00, 0x01, 0x02, 0x0B, 0x00), str("a"), bs(0x00)), ProtocolError, "subscription identifier 0"},
	{"5.0 SUBSCRIBE two subscription ids", V5, pkt(0x82, bs(0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02), str("a"), bs(0x00)), ProtocolError, "property 0x0b appears more than once"},
	{"5.0 SUBSCRIBE subscription id too long", V5, pkt(0x82, bs(0x00, 0x01, 0x06, 0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), str("a"), bs(0x00)), MalformedPacket, "longer than 4 bytes"},
	{"SUBSCRIBE options byte missing", V311, pkt(0x82, bs(0x00, 0x01), str("a")), MalformedPacket, "subscription options overruns"},

	// UNSUBSCRIBE.
	{"UNSUBSCRIBE without filters", V311, bs(0xA2, 0x02, 0x00, 0x01), ProtocolError, "[MQTT-3.10.3-2]"},
	{"UNSUBSCRIBE packet id 0", V5, pkt(0xA2, bs(0x00, 0x00, 0x00), str("a")), ProtocolError, "[MQTT-2.3.1-1]"},
	{"UNSUBSCRIBE invalid filter", V311, pkt(0xA2, bs(0x00, 0x01), str("+a")), TopicFilterInvalid, "[MQTT-4.7.1-3]"},

	// Acknowledgements.
	{"PUBACK packet id 0", V311, bs(0x40, 0x02, 0x00, 0x00), ProtocolError, "PUBACK with packet identifier 0"},
	{"PUBREC packet id 0", V5, bs(0x50, 0x02, 0x00, 0x00), ProtocolError, "PUBREC with packet identifier 0"},
	{"PUBREL packet id 0", V311, bs(0x62, 0x02, 0x00, 0x00), ProtocolError, "PUBREL with packet identifier 0"},
	{"PUBCOMP packet id 0", V5, bs(0x70, 0x02, 0x00, 0x00), ProtocolError, "PUBCOMP with packet identifier 0"},
	{"5.0 PUBREL reason only for PUBACK", V5, bs(0x62, 0x03, 0x00, 0x01, 0x10), ProtocolError, "0x10 is not defined for PUBREL"},
	{"5.0 PUBACK topic alias property", V5, bs(0x40, 0x05, 0x00, 0x01, 0x00, 0x01, 0x23), MalformedPacket, "property 0x23 is not allowed in PUBACK"},
	{"5.0 PUBACK session expiry property", V5, bs(0x40, 0x09, 0x00, 0x01, 0x00, 0x05, 0x11, 0, 0, 0, 1), MalformedPacket, "property 0x11 is not allowed in PUBACK"},
	{"SUBACK packet id 0", V311, bs(0x90, 0x03, 0x00, 0x00, 0x00), ProtocolError, "SUBACK with packet identifier 0"},
	{"SUBACK without return codes", V311, bs(0x90, 0x02, 0x00, 0x01), ProtocolError, "SUBACK without a return code"},
	{"3.1.1 SUBACK 5.0-only reason", V311, bs(0x90, 0x03, 0x00, 0x01, 0x87), ProtocolError, "[MQTT-3.9.3-2]"},
	{"UNSUBACK packet id 0", V311, bs(0xB0, 0x02, 0x00, 0x00), ProtocolError, "UNSUBACK with packet identifier 0"},
	{"5.0 UNSUBACK without reason codes", V5, bs(0xB0, 0x03, 0x00, 0x01, 0x00), ProtocolError, "UNSUBACK without a reason code"},
	{"5.0 UNSUBACK reason not for UNSUBACK", V5, bs(0xB0, 0x04, 0x00, 0x01, 0x00, 0x02), ProtocolError, "[MQTT-3.11.3-2]"},

	// DISCONNECT and AUTH.
	{"5.0 DISCONNECT reason not for DISCONNECT", V5, bs(0xE0, 0x01, 0x01), ProtocolError, "DISCONNECT reason code 0x01"},
	{"5.0 DISCONNECT assigned client id property", V5, bs(0xE0, 0x06, 0x00, 0x04, 0x12, 0x00, 0x01, 'a'), MalformedPacket, "property 0x12 is not allowed in DISCONNECT"},
	{"5.0 AUTH reason not for AUTH", V5, bs(0xF0, 0x01, 0x87), ProtocolError, "[MQTT-3.15.2-1]"},
	{"5.0 AUTH duplicate authentication method", V5, bs(0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x01, 'a', 0x15, 0x00, 0x01, 'b'), ProtocolError, "property 0x15 appears more than once"},
}

func TestDecodeRejects(t *testing.T) {
	for _, c := range malformedCases {
		t.Run(c.name, func(t *testing.T) {
			d := &Decoder{Version: c.v}
			p, err := decodeAll(d, c.wire)
			if err == nil {
				t.Fatalf("Decode(% x) = %#v, want error", c.wire, p)
			}
			wantErr(t, err, c.reason, c.rule)
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
		})
	}
}

// The decoder refuses a body whose length is not the header's remaining length.
func TestDecodeBodyLengthMismatch(t *testing.T) {
	d := &Decoder{Version: V311}
	_, err := d.Decode(FixedHeader{Type: PUBACK, Remaining: 2}, bs(0x00, 0x01, 0x02))
	wantErr(t, err, MalformedPacket, "remaining length 2 but body is 3 bytes")
}

// The decoder re-checks the flags of a header it did not parse itself.
func TestDecodeChecksHeaderFlags(t *testing.T) {
	d := &Decoder{Version: V311}
	_, err := d.Decode(FixedHeader{Type: SUBSCRIBE, Flags: 0, Remaining: 6}, bs(0x00, 0x01, 0x00, 0x01, 'a', 0x00))
	wantErr(t, err, MalformedPacket, "[MQTT-3.8.1-1]")
}

// MQTT 5.0 lets a password come without a user name (3.1.2.9).
func TestDecode5PasswordWithoutUserName(t *testing.T) {
	p, err := decodeAll(&Decoder{}, connect5(0x42, bs(0x00), str("c"), str("secret")))
	if err != nil {
		t.Fatal(err)
	}
	c := p.(*Connect)
	if !c.PasswordFlag || c.UsernameFlag || string(c.Password) != "secret" {
		t.Fatalf("got %#v", c)
	}
}

// After a CONNECT whose level is known but whose body is bad, the decoder
// already knows the version, so the server can answer in it.
func TestDecodeConnectErrorKeepsVersion(t *testing.T) {
	d := &Decoder{}
	_, err := decodeAll(d, connect5(0x02, bs(0x03, 0x21, 0x00, 0x00), str("c")))
	wantErr(t, err, ProtocolError, "receive maximum")
	if d.Version != V5 {
		t.Fatalf("Decoder.Version = %d, want 5", d.Version)
	}
}
