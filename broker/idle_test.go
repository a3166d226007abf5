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
	_, addr := startServer(t, goroutinePerConn, Options{})
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
	_, addr := startServer(t, goroutinePerConn, Options{})
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

// goroutinePerConn configures a server without the event loop: a plain TCP
// connection then has a reader goroutine of its own, as TLS and WebSocket
// ones always do.
func goroutinePerConn(c *Config) { c.EventLoop = false }

// TestLoopPartialPackets: the event loop keeps the start of a packet that
// arrives in pieces, small or larger than its read buffer, and a piece
// holding the end of one packet and the start of the next.
func TestLoopPartialPackets(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	if s.loop == nil {
		t.Fatal("no event loop")
	}
	sub := dialRaw(t, addr, packet.V311)
	sub.mustConnect("sub", true)
	if rc := sub.subscribe(1, "loop/#", 1); len(rc) != 1 || rc[0] != 1 {
		t.Fatalf("SUBACK %v", rc)
	}
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB, five loop buffers
	var stream []byte
	var want [][]byte
	for i, payload := range [][]byte{[]byte("small"), big, []byte("after big"), bytes.Repeat([]byte{'x'}, 300)} {
		b, err := packet.Append(nil, &packet.Publish{Topic: []byte("loop/t"), QoS: 1, PacketID: uint16(i + 1), Payload: payload}, packet.V5)
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, b...)
		want = append(want, payload)
	}
	// Pieces that cut the fixed header, the topic, the payload and the
	// boundary between packets.
	for _, size := range []int{1, 2, 3, 5, 7000, 70000, 1 << 20} {
		if len(stream) == 0 {
			break
		}
		k := min(size, len(stream))
		pub.sendBytes(stream[:k])
		stream = stream[k:]
		time.Sleep(20 * time.Millisecond) // each piece its own read
	}
	if len(stream) > 0 {
		pub.sendBytes(stream)
	}
	for i := range want {
		if a := pub.nextAck(packet.PUBACK); a.PacketID != uint16(i+1) || a.Reason != packet.Success {
			t.Fatalf("PUBACK %+v, want id %d", a, i+1)
		}
	}
	for i, w := range want {
		got := sub.nextPublish()
		if !bytes.Equal(got.Payload, w) {
			t.Fatalf("message %d: %d bytes, want %d", i, len(got.Payload), len(w))
		}
		sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: got.PacketID})
	}
}
