package broker

import (
	"testing"

	"gatewayd/broker/packet"
)

func TestConnectV311Accepted(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V311)
	ack := c.mustConnect("dev1", true)
	if ack.SessionPresent {
		t.Errorf("session present on a clean session")
	}
	c.send(&packet.Pingreq{})
	if p := c.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v, want PINGRESP", p.Type())
	}
}

func TestQoS1RoundTripRaw(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	sub := dialRaw(t, addr, packet.V311)
	sub.mustConnect("sub", true)
	if r := sub.subscribe(1, "a/+", 1); r[0] != 1 {
		t.Fatalf("SUBACK %v", r)
	}
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	pub.publish("a/b", 1, false, 7, "hello")
	if a := pub.nextAck(packet.PUBACK); a.PacketID != 7 {
		t.Fatalf("PUBACK id %d", a.PacketID)
	}
	p := sub.nextPublish()
	if string(p.Topic) != "a/b" || string(p.Payload) != "hello" || p.QoS != 1 {
		t.Fatalf("got %+v", p)
	}
	sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
}
