package broker_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// QoS 0, 1 and 2 from a publisher through the broker to a subscriber, with
// paho clients at every protocol level.
func TestConformanceQoSRoundTripPaho(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	for _, level := range []uint{3, 4} {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("paho.mqtt.golang level %d qos %d", level, qos), func(t *testing.T) {
				topic := fmt.Sprintf("rt/%d/%d", level, qos)
				sub := dialV3(t, b, fmt.Sprintf("rt-sub-%d-%d", level, qos), level, true)
				pub := dialV3(t, b, fmt.Sprintf("rt-pub-%d-%d", level, qos), level, true)
				if granted := sub.sub(t, topic, qos); granted != qos {
					t.Fatalf("SUBACK granted QoS %d, want %d", granted, qos)
				}
				payload := fmt.Sprintf("payload \x00\xff %d/%d", level, qos)
				pub.pub(t, topic, qos, false, payload)
				m := sub.in.waitPayload(t, payload)
				if m.Topic != topic || m.QoS != qos || m.Retain {
					t.Errorf("received %v, want %s qos %d retain false", m, topic, qos)
				}
				pub.pub(t, "fence/"+topic, 0, false, "fence")
			})
		}
	}
	for qos := byte(0); qos <= 2; qos++ {
		t.Run(fmt.Sprintf("paho.golang level 5 qos %d", qos), func(t *testing.T) {
			topic := fmt.Sprintf("rt/5/%d", qos)
			sub, _ := dialV5(t, b, &paho.Connect{ClientID: fmt.Sprintf("rt-sub-5-%d", qos), CleanStart: true})
			pub, _ := dialV5(t, b, &paho.Connect{ClientID: fmt.Sprintf("rt-pub-5-%d", qos), CleanStart: true})
			sub.sub1(t, topic, qos)
			payload := fmt.Sprintf("payload \x00\xff 5/%d", qos)
			pr := pub.pub(t, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
			if qos > 0 && pr.ReasonCode != 0 {
				t.Errorf("QoS %d publish acknowledged with reason %s, want 0x00", qos, reasonHex(pr.ReasonCode))
			}
			m := sub.in.waitPayload(t, payload)
			if m.Topic != topic || m.QoS != qos || m.Retain {
				t.Errorf("received %v, want %s qos %d retain false", m, topic, qos)
			}
		})
	}
}

// Inbound QoS 2 is delivered exactly once: a PUBLISH re-sent with DUP before
// PUBREL is acknowledged again but not delivered again (section 4.3.3,
// [MQTT-4.3.3-2]); after PUBCOMP the packet identifier is free for a new
// message.
func TestConformanceQoS2ExactlyOnceInbound(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	sub := dialV3(t, b, "eo-sub", 4, true)
	sub.sub(t, "eo/#", 2)
	for _, level := range []byte{4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			v5 := level == 5
			topic := fmt.Sprintf("eo/%d", level)
			c := dialRaw(t, b, "qos2 publisher")
			c.connect(connectSpec{Version: level, ClientID: fmt.Sprintf("eo-pub-%d", level), Clean: true, KeepAlive: 30})
			once := fmt.Sprintf("once-%d", level)
			c.send(publishPacket(v5, pubSpec{Topic: topic, Payload: once, QoS: 2, ID: 7}))
			if p := c.expect(tPUBREC); p.packetID() != 7 {
				t.Fatalf("PUBREC for packet id %d, want 7", p.packetID())
			}
			c.send(publishPacket(v5, pubSpec{Topic: topic, Payload: once, QoS: 2, ID: 7, Dup: true}))
			if p := c.expect(tPUBREC); p.packetID() != 7 {
				t.Fatalf("PUBREC for the DUP re-send has packet id %d, want 7", p.packetID())
			}
			c.send(ackPacket(v5, tPUBREL, 7))
			if p := c.expect(tPUBCOMP); p.packetID() != 7 {
				t.Fatalf("PUBCOMP for packet id %d, want 7", p.packetID())
			}
			again := fmt.Sprintf("new message, same id %d", level)
			c.send(publishPacket(v5, pubSpec{Topic: topic, Payload: again, QoS: 2, ID: 7}))
			c.expect(tPUBREC)
			c.send(ackPacket(v5, tPUBREL, 7))
			c.expect(tPUBCOMP)

			sub.in.waitPayload(t, again)
			if got := sub.in.withPayload(once); len(got) != 1 {
				t.Errorf("QoS 2 message sent twice (second with DUP) before PUBREL was delivered %d times, want exactly once", len(got))
			}
		})
	}
}

// A v5 client's Receive Maximum caps the QoS 1 and 2 messages the broker has
// unacknowledged towards it [MQTT-3.3.4-9]; acknowledging frees a slot.
func TestConformanceReceiveMaximumRespectedV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialRaw(t, b, "receive maximum 2")
	c.connect(connectSpec{Version: 5, ClientID: "rm2", Clean: true, KeepAlive: 30, Props: [][]byte{pU16(propReceiveMaximum, 2)}})
	c.subscribe(nil, rawSub{Filter: "rm/t", Options: 1})
	pub := dialV3(t, b, "pub", 4, true)
	const n = 5
	for i := range n {
		pub.pub(t, "rm/t", 1, false, fmt.Sprintf("m%d", i))
	}
	var unacked []uint16
	received := 0
	for received < n {
		for len(unacked) < 2 && received < n {
			p := c.expectPublish()
			unacked = append(unacked, p.ID)
			received++
			if want := fmt.Sprintf("m%d", received-1); p.Payload != want {
				t.Errorf("message %d: payload %q, want %q (in order)", received, p.Payload, want)
			}
		}
		if received < n {
			c.expectNothing(fmt.Sprintf("%d QoS 1 messages unacknowledged with Receive Maximum 2", len(unacked)))
		}
		c.send(ackPacket(true, tPUBACK, unacked[0]))
		unacked = unacked[1:]
	}
	for _, id := range unacked {
		c.send(ackPacket(true, tPUBACK, id))
	}
}

// After a dropped connection, unacknowledged QoS 1 messages are re-sent with
// DUP 1 and their original packet identifiers [MQTT-4.4.0-1], [MQTT-3.3.1-1];
// for QoS 2 past PUBREC, PUBREL is re-sent.
func TestConformanceRedeliveryWithDupAfterReconnect(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	pub := dialV3(t, b, "pub", 4, true)
	for _, level := range []byte{4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			v5 := level == 5
			id := fmt.Sprintf("redeliver-%d", level)
			spec := connectSpec{Version: level, ClientID: id, Clean: false, KeepAlive: 30}
			if v5 {
				spec.Props = [][]byte{pU32(propSessionExpiry, 60)}
			}
			c := dialRaw(t, b, "persistent subscriber")
			c.connect(spec)
			c.subscribe(nil, rawSub{Filter: fmt.Sprintf("redeliver/%d/#", level), Options: 2})
			pub.pub(t, fmt.Sprintf("redeliver/%d/q1", level), 1, false, "qos1")
			first := c.expectPublish()
			if first.Dup || first.QoS != 1 {
				t.Fatalf("first delivery %+v, want QoS 1 DUP 0", first)
			}
			pub.pub(t, fmt.Sprintf("redeliver/%d/q2", level), 2, false, "qos2")
			q2 := c.expectPublish()
			c.send(ackPacket(v5, tPUBREC, q2.ID))
			if p := c.expect(tPUBREL); p.packetID() != q2.ID {
				t.Fatalf("PUBREL for %d, want %d", p.packetID(), q2.ID)
			}
			c.close() // neither PUBACK for the QoS 1 message nor PUBCOMP for the QoS 2 one

			c = dialRaw(t, b, "persistent subscriber, reconnected")
			ca := c.connect(spec)
			if !ca.SessionPresent {
				t.Fatalf("reconnect with the persistent session: Session Present 0, want 1")
			}
			var gotPub *rawPublish
			gotRel := false
			for gotPub == nil || !gotRel {
				p, err := c.next(waitTimeout)
				if err != nil {
					t.Fatalf("after reconnect: want the QoS 1 PUBLISH re-sent with DUP 1 and PUBREL %d re-sent, got PUBLISH %v, PUBREL %v, then %v", q2.ID, gotPub != nil, gotRel, err)
				}
				switch p.Type {
				case tPUBLISH:
					pp, err := p.publish(v5)
					if err != nil {
						t.Fatalf("undecodable PUBLISH %v: %v", p, err)
					}
					if pp.Payload == "qos2" {
						t.Errorf("QoS 2 message re-sent as PUBLISH after PUBREC was sent; want PUBREL only [MQTT-4.4.0-1]")
						continue
					}
					gotPub = pp
				case tPUBREL:
					if p.packetID() != q2.ID {
						t.Errorf("re-sent PUBREL has packet id %d, want %d", p.packetID(), q2.ID)
					}
					gotRel = true
					c.send(ackPacket(v5, tPUBCOMP, p.packetID()))
				default:
					t.Fatalf("after reconnect: unexpected %v", p)
				}
			}
			if !gotPub.Dup {
				t.Errorf("re-sent QoS 1 PUBLISH has DUP 0, want 1 [MQTT-3.3.1-1]")
			}
			if gotPub.ID != first.ID || gotPub.Payload != "qos1" || gotPub.QoS != 1 {
				t.Errorf("re-sent PUBLISH id %d payload %q qos %d, want the original id %d payload %q qos 1 [MQTT-4.4.0-1]", gotPub.ID, gotPub.Payload, gotPub.QoS, first.ID, "qos1")
			}
			c.send(ackPacket(v5, tPUBACK, gotPub.ID))
			c.send(pkt(0xE0))
		})
	}
}

// Packet identifiers of messages in flight to a client are distinct and
// non-zero [MQTT-2.2.1-3]; one is reused only after its acknowledgement.
func TestConformancePacketIDsNotReusedWhileInFlight(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaxInflight = 5 }, broker.Options{})
	c := dialRaw(t, b, "holding acks")
	c.connect(connectSpec{Version: 4, ClientID: "holder", Clean: true, KeepAlive: 30})
	c.subscribe(nil, rawSub{Filter: "ids/t", Options: 1})
	pub := dialV3(t, b, "pub", 4, true)
	const n = 12
	for i := range n {
		pub.pub(t, "ids/t", 1, false, fmt.Sprintf("m%d", i))
	}
	inflight := map[uint16]string{}
	var order []uint16
	received := 0
	for received < n {
		for len(inflight) < 5 && received < n {
			p := c.expectPublish()
			received++
			if p.ID == 0 {
				t.Fatalf("QoS 1 PUBLISH with packet identifier 0")
			}
			if other, busy := inflight[p.ID]; busy {
				t.Fatalf("packet id %d used for %q while %q with the same id is still unacknowledged", p.ID, p.Payload, other)
			}
			inflight[p.ID] = p.Payload
			order = append(order, p.ID)
		}
		// Acknowledge the two oldest, keep the rest in flight.
		for i := 0; i < 2 && len(order) > 0; i++ {
			c.send(ackPacket(false, tPUBACK, order[0]))
			delete(inflight, order[0])
			order = order[1:]
		}
	}
	for _, id := range order {
		c.send(ackPacket(false, tPUBACK, id))
	}
}

// Inbound QoS 2 state belongs to the session: after a reconnect the client
// may re-send the PUBLISH (DUP) and then PUBREL with the same id, and the
// message is still delivered exactly once [MQTT-4.3.3-*], [MQTT-4.4.0-1].
func TestConformanceQoS2InboundSurvivesReconnect(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	sub := dialV3(t, b, "sub", 4, true)
	sub.sub(t, "q2r/#", 2)
	for _, level := range []byte{4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			v5 := level == 5
			spec := connectSpec{Version: level, ClientID: fmt.Sprintf("q2r-%d", level), Clean: false, KeepAlive: 30}
			if v5 {
				spec.Props = [][]byte{pU32(propSessionExpiry, 60)}
			}
			payload := fmt.Sprintf("exactly once across reconnect %d", level)
			msg := pubSpec{Topic: fmt.Sprintf("q2r/%d", level), Payload: payload, QoS: 2, ID: 9}
			c := dialRaw(t, b, "qos 2 publisher")
			c.connect(spec)
			c.send(publishPacket(v5, msg))
			c.expect(tPUBREC)
			c.close()

			c = dialRaw(t, b, "qos 2 publisher, reconnected")
			if ca := c.connect(spec); !ca.SessionPresent {
				t.Fatalf("reconnect: Session Present 0, want 1")
			}
			msg.Dup = true
			c.send(publishPacket(v5, msg))
			if p := c.expect(tPUBREC); p.packetID() != 9 {
				t.Fatalf("PUBREC id %d, want 9", p.packetID())
			}
			c.send(ackPacket(v5, tPUBREL, 9))
			if p := c.expect(tPUBCOMP); p.packetID() != 9 {
				t.Fatalf("PUBCOMP id %d, want 9", p.packetID())
			}
			fence := fmt.Sprintf("fence %d", level)
			c.send(publishPacket(v5, pubSpec{Topic: msg.Topic, Payload: fence}))
			sub.in.waitPayload(t, fence)
			if got := sub.in.withPayload(payload); len(got) != 1 {
				t.Errorf("QoS 2 message sent, connection dropped after PUBREC, re-sent with DUP and released: delivered %d times, want exactly once", len(got))
			}
		})
	}
}

// Unacknowledged QoS 1 messages are re-sent after a reconnect in the order
// they were first sent [MQTT-4.6.0-1], before newer ones.
func TestConformanceRedeliveryKeepsOrder(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	spec := connectSpec{Version: 4, ClientID: "order", Clean: false, KeepAlive: 30}
	c := dialRaw(t, b, "persistent subscriber")
	c.connect(spec)
	c.subscribe(nil, rawSub{Filter: "ord/t", Options: 1})
	pub := dialV3(t, b, "pub", 4, true)
	for i := range 3 {
		pub.pub(t, "ord/t", 1, false, fmt.Sprintf("m%d", i))
	}
	for range 3 {
		c.expectPublish()
	}
	c.close()
	waitOffline(t, b, 1)
	pub.pub(t, "ord/t", 1, false, "m3")
	c = dialRaw(t, b, "persistent subscriber, reconnected")
	c.connect(spec)
	var got []string
	for range 4 {
		p := c.expectPublish()
		got = append(got, fmt.Sprintf("%s dup=%v", p.Payload, p.Dup))
		c.send(ackPacket(false, tPUBACK, p.ID))
	}
	if want := "m0 dup=true,m1 dup=true,m2 dup=true,m3 dup=false"; strings.Join(got, ",") != want {
		t.Errorf("after reconnect received %v, want [%s] (unacknowledged first, in order, with DUP 1)", got, want)
	}
}

// A takeover of a persistent session (clean session 0 / v5 expiry > 0)
// resumes it: Session Present 1, and a message that was in flight to the old
// connection is re-sent to the new one with DUP 1 [MQTT-4.4.0-1].
func TestConformanceTakeoverResumesPersistentSession(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	for _, level := range []byte{4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			v5 := level == 5
			spec := connectSpec{Version: level, ClientID: fmt.Sprintf("resume-%d", level), Clean: false, KeepAlive: 30}
			if v5 {
				spec.Props = [][]byte{pU32(propSessionExpiry, 60)}
			}
			first := dialRaw(t, b, "first connection")
			first.connect(spec)
			first.subscribe(nil, rawSub{Filter: "tk/#", Options: 1})
			pub := dialV3(t, b, fmt.Sprintf("pub-%d", level), 4, true)
			pub.pub(t, fmt.Sprintf("tk/%d", level), 1, false, "in flight")
			orig := first.expectPublish()

			second := dialRaw(t, b, "second connection")
			if ca := second.connect(spec); !ca.SessionPresent {
				t.Errorf("taking over a persistent session: Session Present 0, want 1")
			}
			first.waitClosed("first connection after takeover")
			p := second.expectPublish()
			if p.Payload != "in flight" || !p.Dup || p.ID != orig.ID {
				t.Errorf("new connection got %q dup=%v id=%d, want the in-flight message re-sent with DUP 1 and id %d", p.Payload, p.Dup, p.ID, orig.ID)
			}
			second.send(ackPacket(v5, tPUBACK, p.ID))
			pub.pub(t, fmt.Sprintf("tk/%d", level), 1, false, "after takeover")
			if p := second.expectPublish(); p.Payload != "after takeover" {
				t.Errorf("new connection got %q, want the next message through the resumed subscription", p.Payload)
			}
		})
	}
}

// Outbound QoS 2 and Receive Maximum: a message stays counted until PUBCOMP
// (a successful PUBREC does not free the slot) [MQTT-3.3.4-9]; a PUBREC
// with a failure reason ends the exchange without PUBREL and frees it
// (section 4.3.3).
func TestConformanceReceiveMaximumCountsQoS2UntilPubcompV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialRaw(t, b, "receive maximum 1")
	c.connect(connectSpec{Version: 5, ClientID: "rm1", Clean: true, KeepAlive: 30, Props: [][]byte{pU16(propReceiveMaximum, 1)}})
	c.subscribe(nil, rawSub{Filter: "rm2/t", Options: 2})
	pub := dialV3(t, b, "pub", 4, true)
	for _, p := range []string{"first", "second", "third"} {
		pub.pub(t, "rm2/t", 2, false, p)
	}
	p := c.expectPublish()
	if p.Payload != "first" {
		t.Fatalf("got %q, want first", p.Payload)
	}
	c.send(ackPacket(true, tPUBREC, p.ID))
	c.expect(tPUBREL)
	c.expectNothing("QoS 2 message past PUBREC but before PUBCOMP with Receive Maximum 1")
	c.send(ackPacket(true, tPUBCOMP, p.ID))
	p = c.expectPublish()
	if p.Payload != "second" {
		t.Fatalf("after PUBCOMP got %q, want second", p.Payload)
	}
	c.send(pkt(byte(tPUBREC)<<4, u16(p.ID), []byte{0x80}, noProps())) // refuse it
	p = c.expectPublish()
	if p.Payload != "third" {
		t.Errorf("after PUBREC 0x80 got %q, want third (no PUBREL for a refused message, and its slot freed)", p.Payload)
	}
}
