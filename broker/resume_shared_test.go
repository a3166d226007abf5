package broker

import (
	"strings"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

// quietFor is how long a test waits to see that nothing arrives.
const quietFor = 500 * time.Millisecond

// A QoS 2 message in flight to a shared-subscription member whose session
// stays is completed to that member when it comes back, and never sent to
// another member [MQTT-4.8.2-4], [MQTT-4.8.2-5].
func TestSharedQoS2InFlightStaysWithItsMember(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	a, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "A", clean: true, expiry: 300}, "")
	a.subscribe(1, "$share/g/q2", 2)
	b, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "B", clean: true}, "")
	b.subscribe(1, "$share/g/q2", 2)
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("P", true)

	// Publish until one goes to A; B completes the ones it gets.
	var got *packet.Publish
	for i := uint16(1); got == nil; i++ {
		if i > 20 {
			t.Fatal("no message went to A")
		}
		pub.publish("q2", 2, false, i, "m")
		pub.nextAck(packet.PUBREC)
		pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: i})
		pub.nextAck(packet.PUBCOMP)
		if p, err := a.readWithin(quietFor); err == nil {
			got = p.(*packet.Publish)
			continue
		}
		bp := b.nextPublish()
		b.send(&packet.Ack{Kind: packet.PUBREC, PacketID: bp.PacketID})
		b.nextAck(packet.PUBREL)
		b.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: bp.PacketID})
	}
	a.nc.Close() // gone before PUBREC

	if p, err := b.readWithin(quietFor); err == nil {
		t.Fatalf("the QoS 2 message in flight to A went to B too: %v", p.Type())
	}
	a2, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "A", expiry: 300}, "")
	if !ack.SessionPresent {
		t.Fatal("A's session did not stay")
	}
	p := a2.nextPublish()
	if p.PacketID != got.PacketID || !p.Dup || p.QoS != 2 {
		t.Fatalf("A got on resume id %d dup %v QoS %d, want id %d again with DUP", p.PacketID, p.Dup, p.QoS, got.PacketID)
	}
}

// A message handed over from a member that left goes to a member that can
// take it at QoS 1 or 2, at no more than that member's granted QoS; a member
// granted QoS 0 is never sent a QoS 1 PUBLISH [MQTT-3.8.4-8].
func TestSharedHandOffKeepsToTheGrantedQoS(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	a, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "A", clean: true}, "")
	a.subscribe(1, "$share/g/h", 1)
	b, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "B", clean: true}, "")
	b.subscribe(1, "$share/g/h", 0)
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("P", true)
	for i := uint16(1); i <= 10; i++ {
		pub.publish("h", 1, false, i, "m")
		pub.nextAck(packet.PUBACK)
	}
	// A received its share and acknowledges none of it.
	if _, err := a.readWithin(wait); err != nil {
		t.Fatalf("A got nothing: %v", err)
	}
	a.nc.Close()
	for {
		p, err := b.readWithin(quietFor)
		if err != nil {
			break
		}
		if pp, ok := p.(*packet.Publish); ok && pp.QoS > 0 {
			t.Fatalf("B, granted QoS 0, got a QoS %d PUBLISH", pp.QoS)
		}
	}
}

// A resumed session's unacknowledged deliveries are sent again within the
// new connection's Receive Maximum [MQTT-3.3.4-9]: the rest follow, in
// order, as acknowledgements make room.
func TestResumeKeepsToTheNewReceiveMaximum(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	a, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "A", clean: true, expiry: 300}, "")
	a.subscribe(1, "t", 1)
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("P", true)
	for i := uint16(1); i <= 5; i++ {
		pub.publish("t", 1, false, i, string(rune('0'+i)))
		pub.nextAck(packet.PUBACK)
	}
	for range 5 {
		a.nextPublish() // never acknowledged
	}
	a.nc.Close()

	c := rawConnect{id: "A", expiry: 300}.packet()
	c.Props.ReceiveMaximum = 2
	c.Props.Set(packet.PropReceiveMaximum)
	a2 := dialRaw(t, addr, packet.V5)
	if !a2.connect(c).SessionPresent {
		t.Fatal("no session")
	}
	var got []string
	var ids []uint16
	take := func() {
		t.Helper()
		p := a2.nextPublish()
		if !p.Dup {
			t.Fatalf("resent PUBLISH %q without DUP", p.Payload)
		}
		got, ids = append(got, string(p.Payload)), append(ids, p.PacketID)
	}
	take()
	take()
	if p, err := a2.readWithin(quietFor); err == nil {
		t.Fatalf("a third %v while the client's Receive Maximum is 2 (got %q)", p.Type(), got)
	}
	// Each acknowledgement lets one more go.
	for len(got) < 5 {
		a2.send(&packet.Ack{Kind: packet.PUBACK, PacketID: ids[0]})
		ids = ids[1:]
		take()
	}
	if s := strings.Join(got, ""); s != "12345" {
		t.Fatalf("resent in the order %q, want 12345", s)
	}
}
