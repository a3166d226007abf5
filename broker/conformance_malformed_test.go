package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// malformedCase is one rule broken on purpose after (or instead of) a good
// CONNECT.
type malformedCase struct {
	name    string
	rule    string // the rule broken, for the failure message
	level   byte   // 4 or 5
	pre     bool   // sent instead of CONNECT: no CONNACK expected
	send    [][]byte
	reasons []byte // v5: DISCONNECT reason codes the spec allows (any one)
	// ackFirst is how many acknowledgements (PUBREC, PUBACK) may precede the
	// DISCONNECT, for cases that need several packets to break the rule.
	ackFirst int
}

func v3pub(topic string, qos byte, id uint16, payload string) []byte {
	return publishPacket(false, pubSpec{Topic: topic, QoS: qos, ID: id, Payload: payload})
}

func v5pub(topic string, qos byte, id uint16, payload string, ps ...[]byte) []byte {
	return publishPacket(true, pubSpec{Topic: topic, QoS: qos, ID: id, Payload: payload, Props: ps})
}

// malformedCases lists the malformed packets, one per rule. Reason codes:
// 0x81 Malformed Packet, 0x82 Protocol Error, 0x90 Topic Name invalid,
// 0x93 Receive Maximum exceeded, 0x94 Topic Alias invalid, 0x95 Packet too
// large.
func malformedCases() []malformedCase {
	big := strings.Repeat("x", 2000)
	malformed := []byte{0x81}
	malformedOrProtocol := []byte{0x81, 0x82}
	var cs []malformedCase
	for _, level := range []byte{4, 5} {
		v5 := level == 5
		add := func(name, rule string, reasons []byte, send ...[]byte) {
			cs = append(cs, malformedCase{name: name, rule: rule, level: level, send: send, reasons: reasons})
		}
		pub := func(topic string, qos byte, id uint16, payload string) []byte {
			if v5 {
				return v5pub(topic, qos, id, payload)
			}
			return v3pub(topic, qos, id, payload)
		}
		sub := func(first byte, id uint16, subs ...rawSub) []byte {
			b := subscribePacket(v5, id, nil, subs...)
			b[0] = first
			return b
		}
		add("SUBSCRIBE with reserved flags 0000", "[MQTT-3.8.1-1]", malformed, sub(0x80, 1, rawSub{Filter: "a", Options: 0}))
		add("UNSUBSCRIBE with reserved flags 0000", "[MQTT-3.10.1-1]", malformed, pkt(0xA0, u16(1), propsIf(v5, noProps()), str("a")))
		add("PUBREL with reserved flags 0000", "[MQTT-3.6.1-1]", malformed, pkt(0x60, u16(1)))
		add("PINGREQ with reserved flags 0001", "[MQTT-2.2.2-2]", malformed, []byte{0xC1, 0x00})
		add("reserved packet type 0", "[MQTT-2.2.2-2]", malformedOrProtocol, []byte{0x00, 0x00})
		add("remaining length of 5 bytes", "section 1.5.5 (at most 4 bytes)", malformed, []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01})
		add("topic length beyond the packet", "section 1.5.4", malformed, pkt(0x30, u16(10), []byte("abc")))
		add("invalid UTF-8 in a topic", "[MQTT-1.5.4-1]", malformed, pub("a\xffb", 0, 0, "x"))
		add("UTF-16 surrogate in a topic", "[MQTT-1.5.4-1]", malformed, pub("a\xed\xa0\x80b", 0, 0, "x"))
		add("U+0000 in a topic", "[MQTT-1.5.4-2]", malformed, pub("a\x00b", 0, 0, "x"))
		add("wildcard + in a PUBLISH topic", "[MQTT-3.3.2-2]", []byte{0x90}, pub("a/+", 0, 0, "x"))
		add("wildcard # in a PUBLISH topic", "[MQTT-3.3.2-2]", []byte{0x90}, pub("a/#", 1, 3, "x"))
		add("PUBLISH QoS 3", "[MQTT-3.3.1-4]", malformed, cat([]byte{0x36}, pub("a", 1, 1, "x")[1:]))
		add("PUBLISH QoS 0 with DUP 1", "[MQTT-3.3.1-2]", malformedOrProtocol, cat([]byte{0x38}, pub("a", 0, 0, "x")[1:]))
		add("PUBLISH QoS 1 with packet id 0", "[MQTT-2.2.1-3]", malformedOrProtocol, pub("a", 1, 0, "x"))
		add("SUBSCRIBE with packet id 0", "[MQTT-2.2.1-3]", malformedOrProtocol, sub(0x82, 0, rawSub{Filter: "a", Options: 0}))
		add("SUBSCRIBE with no filters", "[MQTT-3.8.3-3]", malformedOrProtocol, pkt(0x82, u16(1), propsIf(v5, noProps())))
		add("UNSUBSCRIBE with no filters", "[MQTT-3.10.3-2]", malformedOrProtocol, pkt(0xA2, u16(1), propsIf(v5, noProps())))
		add("SUBSCRIBE requesting QoS 3", "section 3.8.3.1 (3.1.1: [MQTT-3-8.3-4])", malformedOrProtocol, sub(0x82, 1, rawSub{Filter: "a", Options: 3}))
		add("SUBSCRIBE with invalid UTF-8 filter", "[MQTT-1.5.4-1]", malformed, sub(0x82, 1, rawSub{Filter: "a/\xc0", Options: 0}))
		add("PUBLISH larger than max_packet_size", "section 3.1.2.11.4 / 3.2.2.3.6", []byte{0x95}, pub("a", 0, 0, big))
		add("AUTH (type 15) without an Authentication Method in CONNECT", "section 4.12 (3.1.1: reserved type)", malformedOrProtocol, pkt(0xF0, []byte{0x18}, noProps()))
		add("second CONNECT", "[MQTT-3.1.0-2]", []byte{0x82}, connectPacket(connectSpec{Version: level, ClientID: "again", Clean: true, KeepAlive: 30}))
		if !v5 {
			add("PUBLISH with an empty topic", "[MQTT-4.7.3-1]", nil, v3pub("", 0, 0, "x"))
			add("SUBSCRIBE option with reserved bits set", "[MQTT-3.8.3-4] (3.1.1)", nil, sub(0x82, 1, rawSub{Filter: "a", Options: 0x05}))
			continue
		}
		add("SUBSCRIBE options with reserved bits 6-7 set", "[MQTT-3.8.3-5]", malformed, sub(0x82, 1, rawSub{Filter: "a", Options: 0xC0}))
		add("SUBSCRIBE retain handling 3", "section 3.8.3.1", malformedOrProtocol, sub(0x82, 1, rawSub{Filter: "a", Options: 0x30}))
		add("No Local on a shared subscription", "[MQTT-3.8.3-4]", []byte{0x82}, sub(0x82, 1, rawSub{Filter: "$share/g/a", Options: 0x04}))
		add("Subscription Identifier 0", "section 3.8.2.1.2", malformedOrProtocol, subscribePacket(true, 1, [][]byte{pVar(propSubscriptionID, 0)}, rawSub{Filter: "a"}))
		add("topic alias over the maximum", "[MQTT-3.3.2-9]", []byte{0x94}, v5pub("a", 0, 0, "x", pU16(propTopicAlias, 5)))
		add("topic alias 0", "[MQTT-3.3.2-8]", []byte{0x82, 0x94}, v5pub("a", 0, 0, "x", pU16(propTopicAlias, 0)))
		add("empty topic with an alias never set", "section 3.3.2.3.4", []byte{0x82, 0x94}, v5pub("", 0, 0, "x", pU16(propTopicAlias, 2)))
		add("empty topic without an alias", "section 3.3.2.1: \"It is a Protocol Error if the Topic Name is zero length and there is no Topic Alias\"", []byte{0x82}, v5pub("", 0, 0, "x"))
		add("PUBLISH from a client with a Subscription Identifier", "[MQTT-3.3.4-6]", malformedOrProtocol, v5pub("a", 0, 0, "x", pVar(propSubscriptionID, 3)))
		add("property given twice", "section 2.2.2.2", malformedOrProtocol, v5pub("a", 0, 0, "x", pByte(propPayloadFormat, 0), pByte(propPayloadFormat, 0)))
		add("unknown property identifier", "section 2.2.2.2", malformed, v5pub("a", 0, 0, "x", []byte{0x7F, 0x00}))
		add("property not allowed in PUBLISH (Session Expiry)", "section 2.2.2.2", malformedOrProtocol, v5pub("a", 0, 0, "x", pU32(propSessionExpiry, 1)))
		add("property length beyond the packet", "section 2.2.2.1", malformed, pkt(0x30, str("a"), []byte{0x10, 0x01, 0x01}))
		add("DISCONNECT setting Session Expiry when CONNECT had 0", "[MQTT-3.14.2-2]", []byte{0x82}, pkt(0xE0, []byte{0x00}, props(pU32(propSessionExpiry, 60))))
		cs = append(cs, malformedCase{name: "more QoS 2 in flight than Receive Maximum", rule: "section 3.3.4 (0x93)", level: 5,
			send:    [][]byte{v5pub("rm", 2, 1, "1"), v5pub("rm", 2, 2, "2"), v5pub("rm", 2, 3, "3"), v5pub("rm", 2, 4, "4")},
			reasons: []byte{0x93}, ackFirst: 3})
	}
	for _, level := range []byte{4, 5} {
		pre := func(name, rule string, b []byte) {
			cs = append(cs, malformedCase{name: name, rule: rule, level: level, pre: true, send: [][]byte{b}})
		}
		pre("first packet PINGREQ instead of CONNECT", "[MQTT-3.1.0-1]", []byte{0xC0, 0x00})
		pre("first packet PUBLISH instead of CONNECT", "[MQTT-3.1.0-1]", v3pub("a", 0, 0, "x"))
		good := connectPacket(connectSpec{Version: level, ClientID: "pre", Clean: true, KeepAlive: 30})
		flagsAt := 2 + 6 + 1 // fixed header (2 bytes here), protocol name, level
		withFlags := func(f byte) []byte { b := append([]byte(nil), good...); b[flagsAt] = f; return b }
		pre("CONNECT reserved flag set", "[MQTT-3.1.2-3]", withFlags(0x03))
		pre("CONNECT will QoS without will flag", "[MQTT-3.1.2-13]", withFlags(0x0A))
		pre("CONNECT will retain without will flag", "[MQTT-3.1.2-15]", withFlags(0x22))
		pre("CONNECT username flag without a username", "[MQTT-3.1.2-19]", withFlags(0x82))
		if level == 4 {
			pre("CONNECT password without username", "[MQTT-3.1.2-22]", connectPacket(connectSpec{Version: 4, ClientID: "pre", Clean: true, KeepAlive: 30, Password: strp("p")}))
		}
		pre("CONNECT will QoS 3", "[MQTT-3.1.2-14]", connectPacket(connectSpec{Version: level, ClientID: "pre", Clean: true, KeepAlive: 30, Will: &willSpec{Topic: "w", Payload: "x", QoS: 3}}))
		pre("CONNECT will topic with a wildcard", "[MQTT-3.1.3-11]", connectPacket(connectSpec{Version: level, ClientID: "pre", Clean: true, KeepAlive: 30, Will: &willSpec{Topic: "w/#", Payload: "x"}}))
		pre("CONNECT with invalid UTF-8 client id", "[MQTT-1.5.4-1]", connectPacket(connectSpec{Version: level, ClientID: "a\xff", Clean: true, KeepAlive: 30}))
		if level == 5 {
			pre("CONNECT with Receive Maximum 0", "section 3.1.2.11.3", connectPacket(connectSpec{Version: 5, ClientID: "pre", Clean: true, KeepAlive: 30, Props: [][]byte{pU16(propReceiveMaximum, 0)}}))
			pre("CONNECT with Maximum Packet Size 0", "section 3.1.2.11.4", connectPacket(connectSpec{Version: 5, ClientID: "pre", Clean: true, KeepAlive: 30, Props: [][]byte{pU32(propMaximumPacketSize, 0)}}))
			pre("CONNECT with Session Expiry Interval twice", "section 3.1.2.11.2", connectPacket(connectSpec{Version: 5, ClientID: "pre", Clean: true, KeepAlive: 30, Props: [][]byte{pU32(propSessionExpiry, 1), pU32(propSessionExpiry, 2)}}))
			pre("CONNECT with a will property not allowed in wills (Topic Alias)", "section 3.1.3.2", connectPacket(connectSpec{Version: 5, ClientID: "pre", Clean: true, KeepAlive: 30, Will: &willSpec{Topic: "w", Payload: "x", Props: [][]byte{pU16(propTopicAlias, 1)}}}))
		}
	}
	return cs
}

// Each malformed packet closes only the connection that sent it: in v5 a
// DISCONNECT with the reason arrives first (section 4.13), in 3.1.1 the
// connection is simply closed [MQTT-4.8.0-1]; a packet in place of CONNECT,
// or a bad CONNECT, gets at most a refusing CONNACK. Another client keeps
// working throughout.
func TestConformanceMalformedPacketsCloseOnlyThatConnection(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) {
		c.MaxPacketSize = 1024
		c.TopicAliasMaximum = 4
		c.ReceiveMaximum = 3
	}, broker.Options{})
	observer := dialV3(t, b, "observer", 4, true)
	observer.sub(t, "alive/#", 1)
	observer5, _ := dialV5(t, b, &paho.Connect{ClientID: "observer5", CleanStart: true})
	observer5.sub1(t, "alive/#", 1)
	pub := dialV3(t, b, "observer-pub", 4, true)

	for i, tc := range malformedCases() {
		t.Run(fmt.Sprintf("v%d %s", map[byte]int{4: 311, 5: 5}[tc.level], tc.name), func(t *testing.T) {
			c := dialRaw(t, b, tc.name)
			if !tc.pre {
				c.connect(connectSpec{Version: tc.level, ClientID: fmt.Sprintf("bad-%d", i), Clean: true, KeepAlive: 30})
			}
			for _, p := range tc.send {
				if err := c.trySend(p); err != nil {
					break // closed early: fine, what matters is what arrived
				}
			}
			got := c.waitClosed(fmt.Sprintf("after %s %s", tc.name, tc.rule))
			switch {
			case tc.pre:
				if len(got) > 1 || len(got) == 1 && (got[0].Type != tCONNACK || len(got[0].Body) < 2 || got[0].Body[1] == 0) {
					t.Errorf("%s %s: got %s; want the connection closed, at most after a CONNACK refusing it", tc.name, tc.rule, describePackets(got))
				}
			case tc.level == 4:
				if len(got) != 0 {
					t.Errorf("3.1.1 %s %s: got %s before the close; want the connection closed with nothing sent", tc.name, tc.rule, describePackets(got))
				}
			default:
				acks := got[:max(0, len(got)-1)]
				if len(got) == 0 || got[len(got)-1].Type != tDISCONNECT || len(acks) > tc.ackFirst {
					t.Errorf("v5 %s %s: got %s then close; want DISCONNECT with reason %s first", tc.name, tc.rule, describePackets(got), reasonsHex(tc.reasons))
					break
				}
				if r := got[len(got)-1].disconnectReason(); !containsByte(tc.reasons, r) {
					t.Errorf("v5 %s %s: DISCONNECT reason %s, want %s", tc.name, tc.rule, reasonHex(r), reasonsHex(tc.reasons))
				}
			}
			payload := fmt.Sprintf("alive after %d", i)
			pub.pub(t, "alive/t", 1, false, payload)
			observer.in.waitPayload(t, payload)
			observer5.in.waitPayload(t, payload)
		})
	}
}

func containsByte(bs []byte, b byte) bool {
	for _, x := range bs {
		if x == b {
			return true
		}
	}
	return false
}

func reasonsHex(rs []byte) string {
	var s []string
	for _, r := range rs {
		s = append(s, reasonHex(r))
	}
	return strings.Join(s, " or ")
}
