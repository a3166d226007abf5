package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// Every protocol level the broker speaks accepts a client and carries a
// message both ways, with the client library users actually run.
func TestConformanceConnectProtocolLevelsWithPaho(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	for _, level := range []uint{3, 4} {
		t.Run(fmt.Sprintf("paho.mqtt.golang level %d", level), func(t *testing.T) {
			c := dialV3(t, b, fmt.Sprintf("level-%d", level), level, true)
			topic := fmt.Sprintf("levels/%d", level)
			c.sub(t, topic, 1)
			c.pub(t, topic, 1, false, "hello")
			m := c.in.waitPayload(t, "hello")
			if m.Topic != topic || m.QoS != 1 {
				t.Errorf("level %d client received %v, want %s qos 1", level, m, topic)
			}
		})
	}
	t.Run("paho.golang level 5", func(t *testing.T) {
		c, ca := dialV5(t, b, &paho.Connect{ClientID: "level-5", CleanStart: true})
		if ca.ReasonCode != 0 {
			t.Fatalf("CONNACK reason %s, want 0x00", reasonHex(ca.ReasonCode))
		}
		c.sub1(t, "levels/5", 1)
		c.pub(t, &paho.Publish{Topic: "levels/5", QoS: 1, Payload: []byte("hello")})
		m := c.in.waitPayload(t, "hello")
		if m.Topic != "levels/5" || m.QoS != 1 {
			t.Errorf("level 5 client received %v, want levels/5 qos 1", m)
		}
	})
}

// The wire bytes of CONNACK for each accepted level: 3.1 and 3.1.1 have a
// two-byte CONNACK, 5.0 adds properties.
func TestConformanceConnectProtocolLevelsRaw(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	for _, level := range []byte{3, 4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			c := dialRaw(t, b, fmt.Sprintf("raw level %d", level))
			c.send(connectPacket(connectSpec{Version: level, ClientID: fmt.Sprintf("raw-%d", level), Clean: true, KeepAlive: 30}))
			p := c.expect(tCONNACK)
			if level < 5 {
				if want := []byte{0, 0}; string(p.Body) != string(want) {
					t.Fatalf("CONNACK body [%s], want [%s] (accepted, no session) [MQTT-3.2.2-1]", fmtBytes(p.Body), fmtBytes(want))
				}
				return
			}
			ca, err := p.connack(true)
			if err != nil || ca.Code != 0 || ca.SessionPresent {
				t.Fatalf("CONNACK %v (decoded %+v, err %v), want reason 0x00, session present 0", p, ca, err)
			}
			c.send(pkt(0xC0))
			c.expect(tPINGRESP)
		})
	}
}

// An unsupported protocol level is refused with "unacceptable protocol
// version" and the connection is closed [MQTT-3.1.2-2] (3.1.1), or with
// 0x84 Unsupported Protocol Version (5.0, where the CONNACK may use either
// format because the broker cannot know which the client reads).
func TestConformanceConnectUnsupportedProtocolLevel(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	for _, tc := range []struct {
		name    string
		pname   string
		level   byte
		allowed map[byte]bool // CONNACK return/reason codes the spec allows
	}{
		{"MQTT level 2", "MQTT", 2, map[byte]bool{0x01: true}},
		{"MQTT level 6", "MQTT", 6, map[byte]bool{0x01: true, 0x84: true}},
		{"MQIsdp level 7", "MQIsdp", 7, map[byte]bool{0x01: true, 0x84: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, b, tc.name)
			c.send(connectPacket(connectSpec{Version: tc.level, Name: tc.pname, ClientID: "badlevel", Clean: true, KeepAlive: 30}))
			got := c.waitClosed("CONNECT with unsupported protocol level")
			if len(got) != 1 || got[0].Type != tCONNACK || len(got[0].Body) < 2 {
				t.Fatalf("after CONNECT level %d: got %s then close, want one CONNACK refusing the level then close", tc.level, describePackets(got))
			}
			if code := got[0].Body[1]; !tc.allowed[code] {
				t.Fatalf("CONNACK code %s for level %d, want 0x01 (3.1.1 unacceptable protocol version) or 0x84 (v5 Unsupported Protocol Version)", reasonHex(code), tc.level)
			}
		})
	}
}

// A v5 client that sends an empty client identifier gets one assigned in
// CONNACK [MQTT-3.2.2-16], and can use the connection.
func TestConformanceConnectV5EmptyClientIDIsAssigned(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c, ca := dialV5(t, b, &paho.Connect{ClientID: "", CleanStart: true})
	if ca.Properties == nil || ca.Properties.AssignedClientID == "" {
		t.Fatalf("CONNACK properties %+v: want an Assigned Client Identifier for an empty client id [MQTT-3.2.2-16]", ca.Properties)
	}
	c2, ca2 := dialV5(t, b, &paho.Connect{ClientID: "", CleanStart: true})
	if ca2.Properties == nil || ca2.Properties.AssignedClientID == ca.Properties.AssignedClientID {
		t.Fatalf("two clients were assigned the same identifier %q; identifiers must be unique", ca.Properties.AssignedClientID)
	}
	c.sub1(t, "assigned/t", 0)
	c2.pub(t, &paho.Publish{Topic: "assigned/t", Payload: []byte("x")})
	c.in.waitPayload(t, "x")
	select {
	case d := <-c.serverDisco:
		t.Fatalf("first client with assigned id was disconnected (reason %s) when a second one connected", reasonHex(d.ReasonCode))
	default:
	}
}

// 3.1.1: an empty client identifier is accepted with clean session 1
// [MQTT-3.1.3-6] and refused with return code 0x02 "identifier rejected"
// with clean session 0 [MQTT-3.1.3-8].
func TestConformanceConnectV311EmptyClientID(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	t.Run("clean session 1 accepted", func(t *testing.T) {
		c := dialRaw(t, b, "empty id clean")
		ca := c.connectAny(connectSpec{Version: 4, ClientID: "", Clean: true, KeepAlive: 30})
		if ca.Code != 0 {
			t.Fatalf("CONNACK return code %s, want 0x00 for empty client id with clean session [MQTT-3.1.3-6]", reasonHex(ca.Code))
		}
		c.send(pkt(0xC0))
		c.expect(tPINGRESP)
	})
	t.Run("clean session 0 rejected", func(t *testing.T) {
		c := dialRaw(t, b, "empty id persistent")
		c.send(connectPacket(connectSpec{Version: 4, ClientID: "", Clean: false, KeepAlive: 30}))
		got := c.waitClosed("empty client id with clean session 0")
		if len(got) != 1 || got[0].Type != tCONNACK || string(got[0].Body) != "\x00\x02" {
			t.Fatalf("got %s then close, want CONNACK [00 02] (identifier rejected) then close [MQTT-3.1.3-8]", describePackets(got))
		}
	})
}

// A second connection with the same client identifier takes the session
// over and the first connection is closed [MQTT-3.1.4-2].
func TestConformanceSessionTakeoverV311(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	first := dialV3(t, b, "takeover", 4, true)
	second := dialV3(t, b, "takeover", 4, true)
	select {
	case <-first.lost:
	case <-time.After(waitTimeout):
		t.Fatalf("first connection of client id %q still open %v after a second connection with the same id [MQTT-3.1.4-2]", "takeover", waitTimeout)
	}
	second.sub(t, "takeover/t", 1)
	second.pub(t, "takeover/t", 1, false, "still works")
	second.in.waitPayload(t, "still works")
}

// v5: the first connection receives DISCONNECT 0x8E Session taken over
// before it is closed [MQTT-3.1.4-3].
func TestConformanceSessionTakeoverV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	first, _ := dialV5(t, b, &paho.Connect{ClientID: "takeover5", CleanStart: true})
	second, _ := dialV5(t, b, &paho.Connect{ClientID: "takeover5", CleanStart: true})
	select {
	case d := <-first.serverDisco:
		if d.ReasonCode != 0x8E {
			t.Fatalf("first connection got DISCONNECT %s, want 0x8E Session taken over", reasonHex(d.ReasonCode))
		}
	case err := <-first.clientErr:
		t.Fatalf("first connection closed without DISCONNECT 0x8E Session taken over: %v", err)
	case <-time.After(waitTimeout):
		t.Fatalf("first connection got nothing within %v after a second connection took its client id", waitTimeout)
	}
	second.sub1(t, "takeover5/t", 1)
	second.pub(t, &paho.Publish{Topic: "takeover5/t", QoS: 1, Payload: []byte("still works")})
	second.in.waitPayload(t, "still works")
}

// 3.1.1: Session Present is 0 with clean session 1 [MQTT-3.2.2-1], and with
// clean session 0 it says whether the broker kept a session [MQTT-3.2.2-2];
// a clean session 1 connection discards the stored session [MQTT-3.1.2-6].
func TestConformanceCleanSessionSessionPresentV311(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	steps := []struct {
		clean     bool
		subscribe bool
		want      bool
		why       string
	}{
		{true, false, false, "first connection, clean session 1"},
		{false, false, false, "clean session 0 after a clean session: nothing was kept"},
		{false, true, true, "clean session 0 again: the session from the previous connection exists"},
		{false, false, true, "clean session 0 again: still there"},
		{true, false, false, "clean session 1 discards it"},
		{false, false, false, "clean session 0 after the discard: nothing was kept"},
	}
	for i, st := range steps {
		c, tok := connectV3(t, v3Options(b, "present311", 4, st.clean))
		if err := tok.Error(); err != nil {
			t.Fatalf("step %d (%s): CONNECT refused: %v", i, st.why, err)
		}
		if got := tok.SessionPresent(); got != st.want {
			t.Errorf("step %d (%s): CONNACK Session Present %v, want %v (the previous connection's DISCONNECT may still be in flight: see TestConformanceTakeoverDoesNotResumeCleanSessionV311)", i, st.why, got, st.want)
		}
		if st.subscribe {
			c.sub(t, "present/t", 1)
		}
		c.Disconnect(100)
	}
}

// 3.1.1: a clean session lasts only as long as its network connection and
// its state must not be reused [MQTT-3.1.2-6], also when a second
// connection with clean session 0 takes the client id over while the first
// is still open: Session Present must be 0 and its subscriptions gone.
func TestConformanceTakeoverDoesNotResumeCleanSessionV311(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	first := dialRaw(t, b, "clean session connection")
	first.connect(connectSpec{Version: 4, ClientID: "clean-takeover", Clean: true, KeepAlive: 30})
	first.subscribe(nil, rawSub{Filter: "ct/t", Options: 1})

	second := dialRaw(t, b, "clean session 0 taking over")
	ca := second.connect(connectSpec{Version: 4, ClientID: "clean-takeover", Clean: false, KeepAlive: 30})
	first.waitClosed("first connection after takeover")
	if ca.SessionPresent {
		t.Errorf("CONNACK Session Present 1 when taking over a clean-session connection; want 0: its session ended with its connection [MQTT-3.1.2-6]")
	}
	second.subscribe(nil, rawSub{Filter: "ct/fence", Options: 0})
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "ct/t", 1, false, "from the clean session's subscription")
	pub.pub(t, "ct/fence", 0, false, "fence")
	if p := second.expectPublish(); p.Topic != "ct/fence" {
		t.Errorf("received %q on %s through the previous clean session's subscription; want nothing (state must not be reused) [MQTT-3.1.2-6]", p.Payload, p.Topic)
	}
}

// v5: Session Expiry Interval 0 ends the session when the connection closes;
// a positive interval keeps it until the interval has passed
// [MQTT-3.1.2-23], and Session Present reports it [MQTT-3.2.2-3].
func TestConformanceCleanStartSessionExpiryV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	connect := func(clean bool, expiry uint32) (*v5Client, bool) {
		t.Helper()
		c, ca := dialV5(t, b, &paho.Connect{ClientID: "expiry5", CleanStart: clean,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: u32p(expiry)}})
		return c, ca.SessionPresent
	}
	disconnect := func(c *v5Client) {
		t.Helper()
		if err := c.Disconnect(&paho.Disconnect{ReasonCode: 0}); err != nil {
			t.Fatalf("DISCONNECT: %v", err)
		}
	}

	c, present := connect(true, 0)
	if present {
		t.Errorf("clean start 1: Session Present 1, want 0 [MQTT-3.2.2-2]")
	}
	c.sub1(t, "expiry/t", 1)
	disconnect(c)

	c, present = connect(false, 2)
	if present {
		t.Errorf("clean start 0 after a session with expiry 0 was closed: Session Present 1, want 0 (the session ended at disconnect)")
	}
	c.sub1(t, "expiry/t", 1)
	disconnect(c)

	c, present = connect(false, 2)
	if !present {
		t.Errorf("clean start 0 right after a session with expiry 2 s: Session Present 0, want 1 (the session must be kept for 2 s)")
	}
	disconnect(c)

	time.Sleep(3 * time.Second) // let the 2 s Session Expiry Interval pass
	c, present = connect(false, 0)
	if present {
		t.Errorf("clean start 0 3 s after a session with expiry 2 s closed: Session Present 1, want 0 (the session expired)")
	}
	disconnect(c)
}

// v5 CONNACK tells the client the broker's limits and features
// (section 3.2.2.3), which paho.golang reads.
func TestConformanceConnackPropertiesV5(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) {
		c.ReceiveMaximum = 20
		c.MaxPacketSize = 4096
		c.TopicAliasMaximum = 8
	}, broker.Options{})
	_, ca := dialV5(t, b, &paho.Connect{ClientID: "connackprops", CleanStart: true})
	p := ca.Properties
	if p == nil {
		t.Fatalf("CONNACK has no properties; want Receive Maximum, Maximum Packet Size, Topic Alias Maximum")
	}
	if p.ReceiveMaximum == nil || *p.ReceiveMaximum != 20 {
		t.Errorf("CONNACK Receive Maximum %v, want 20 (receive_maximum)", deref16(p.ReceiveMaximum))
	}
	if p.MaximumPacketSize == nil || *p.MaximumPacketSize != 4096 {
		t.Errorf("CONNACK Maximum Packet Size %v, want 4096 (max_packet_size)", deref32(p.MaximumPacketSize))
	}
	if p.TopicAliasMaximum == nil || *p.TopicAliasMaximum != 8 {
		t.Errorf("CONNACK Topic Alias Maximum %v, want 8 (topic_alias_maximum)", deref16(p.TopicAliasMaximum))
	}
	if !p.WildcardSubAvailable || !p.SubIDAvailable || !p.SharedSubAvailable {
		t.Errorf("CONNACK wildcard/subscription-id/shared available = %v/%v/%v, want all true", p.WildcardSubAvailable, p.SubIDAvailable, p.SharedSubAvailable)
	}
	if !p.RetainAvailable {
		t.Errorf("CONNACK Retain Available 0, want 1 (retain_available: true)")
	}
	if p.MaximumQoS != nil && *p.MaximumQoS != 1 && *p.MaximumQoS != 0 {
		t.Errorf("CONNACK Maximum QoS %d: a value other than 0 or 1 is a protocol error", *p.MaximumQoS)
	}

	t.Run("retain not available", func(t *testing.T) {
		b := startBroker(t, func(c *broker.Config) { c.RetainAvailable = false }, broker.Options{})
		_, ca := dialV5(t, b, &paho.Connect{ClientID: "noretain", CleanStart: true})
		if ca.Properties == nil || ca.Properties.RetainAvailable {
			t.Errorf("retain_available false: CONNACK Retain Available absent or 1, want 0")
		}
	})
}

func deref16(p *uint16) any {
	if p == nil {
		return "absent"
	}
	return *p
}

func deref32(p *uint32) any {
	if p == nil {
		return "absent"
	}
	return *p
}

// When max_keepalive lowers the client's Keep Alive, CONNACK carries Server
// Keep Alive with the value to use (section 3.2.2.3.14); when the client's
// is within the limit there is nothing to lower.
func TestConformanceServerKeepAliveV5(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaxKeepAlive = 10 }, broker.Options{})
	_, ca := dialV5(t, b, &paho.Connect{ClientID: "ka-high", CleanStart: true, KeepAlive: 120})
	if ca.Properties == nil || ca.Properties.ServerKeepAlive == nil || *ca.Properties.ServerKeepAlive != 10 {
		var got any = "absent"
		if ca.Properties != nil {
			got = deref16(ca.Properties.ServerKeepAlive)
		}
		t.Errorf("client Keep Alive 120 with max_keepalive 10: CONNACK Server Keep Alive %v, want 10", got)
	}
	_, ca = dialV5(t, b, &paho.Connect{ClientID: "ka-low", CleanStart: true, KeepAlive: 5})
	if ca.Properties != nil && ca.Properties.ServerKeepAlive != nil && *ca.Properties.ServerKeepAlive != 5 {
		t.Errorf("client Keep Alive 5 with max_keepalive 10: CONNACK Server Keep Alive %d, want absent or 5", *ca.Properties.ServerKeepAlive)
	}
}
