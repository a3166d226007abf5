package broker

import (
	"bytes"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

// waitHandoffs waits until at least want idle connections have been handed
// to a fresh reader goroutine since from.
func waitHandoffs(t *testing.T, from uint64, want int) {
	t.Helper()
	waitFor(t, "idle readers handed off", func() bool { return readerHandoffs.Load()-from >= uint64(want) })
}

// TestIdleHandoffKeepsServing: connections whose reader moved to a fresh
// goroutine after idling keep their subscriptions, answer PINGREQ, accept a
// PUBLISH whose bytes straddle a hand-off deadline, and deliver it.
func TestIdleHandoffKeepsServing(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	from := readerHandoffs.Load()
	sub := dialRaw(t, addr, packet.V311)
	sub.mustConnect("sub", true)
	if rc := sub.subscribe(1, "idle/t", 1); len(rc) != 1 || rc[0] != 1 {
		t.Fatalf("SUBACK %v", rc)
	}
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	waitHandoffs(t, from, 2)

	sub.send(&packet.Pingreq{})
	if p := sub.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v, want PINGRESP", p.Type())
	}

	b, err := packet.Append(nil, &packet.Publish{Topic: []byte("idle/t"), QoS: 1, PacketID: 7, Payload: []byte("after idling")}, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	from = readerHandoffs.Load()
	pub.sendBytes(b[:5])
	// Longer than the hand-off wait: the reader holding a partial packet
	// keeps it and waits on.
	time.Sleep(idleHandoff + idleHandoff/2)
	pub.sendBytes(b[5:])
	if a := pub.nextAck(packet.PUBACK); a.PacketID != 7 || a.Reason != packet.Success {
		t.Fatalf("PUBACK %+v", a)
	}
	got := sub.nextPublish()
	if string(got.Topic) != "idle/t" || !bytes.Equal(got.Payload, []byte("after idling")) {
		t.Fatalf("got %q %q", got.Topic, got.Payload)
	}
	sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
	waitHandoffs(t, from, 1)
}

// TestIdleHandoffKeepAlive: the keepalive still ends a silent connection
// after its reader was handed off, and keepalive 0 still never does.
func TestIdleHandoffKeepAlive(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	from := readerHandoffs.Load()
	forever := dialRaw(t, addr, packet.V311)
	forever.connect(&packet.Connect{ClientID: []byte("forever"), CleanStart: true, KeepAlive: 0})
	sleepy := dialRaw(t, addr, packet.V5)
	sleepy.connect(&packet.Connect{ClientID: []byte("sleepy"), CleanStart: true, KeepAlive: 1})
	start := time.Now()
	if d, ok := sleepy.next().(*packet.Disconnect); !ok || d.Reason != packet.KeepAliveTimeout {
		t.Fatal("want DISCONNECT 0x8D")
	}
	sleepy.closed()
	if el := time.Since(start); el < time.Second {
		t.Fatalf("closed after %v, before the keepalive", el)
	}
	waitHandoffs(t, from, 2) // both went through the hand-off first
	forever.send(&packet.Pingreq{})
	if p := forever.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v, want PINGRESP", p.Type())
	}
}
