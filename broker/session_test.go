package broker

import (
	"fmt"
	"testing"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
)

// TestTakeoverV5: a second connection with the same client id takes the
// session over; the first gets DISCONNECT 0x8E and is closed, and its will
// (no delay) is published.
func TestTakeoverV5(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	watcher := dialRaw(t, addr, packet.V5)
	watcher.mustConnect("watcher", true)
	watcher.subscribe(1, "will/#", 0)

	old := dialRaw(t, addr, packet.V5)
	old.connect(rawConnect{id: "dup", clean: true, will: "will/dup", willPayload: "old went"}.packet())
	newer := dialRaw(t, addr, packet.V5)
	ack := newer.connect(rawConnect{id: "dup", clean: false}.packet())
	if ack.Reason != 0 {
		t.Fatalf("CONNACK %#x", ack.Reason)
	}
	p := old.next()
	d, ok := p.(*packet.Disconnect)
	if !ok || d.Reason != packet.SessionTakenOver {
		t.Fatalf("old connection got %v, want DISCONNECT 0x8E", p.Type())
	}
	old.closed()
	if m := watcher.nextPublish(); string(m.Payload) != "old went" {
		t.Fatalf("will %q", m.Payload)
	}
	newer.send(&packet.Pingreq{})
	if p := newer.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("new connection: %v", p.Type())
	}
}

// TestTakeoverResumesWithinWillDelay: a delayed will is not published when
// the session is resumed by a new connection before the delay passes.
func TestTakeoverResumesWithinWillDelay(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	old := dialRaw(t, addr, packet.V5)
	old.connect(rawConnect{id: "d", clean: true, expiry: 300, will: "will/d", willPayload: "x", willDelay: 3600}.packet())
	newer := dialRaw(t, addr, packet.V5)
	if ack := newer.connect(rawConnect{id: "d", expiry: 300}.packet()); !ack.SessionPresent {
		t.Fatalf("session not present after takeover")
	}
	old.closed()
	newer.send(&packet.Disconnect{})
	newer.closed()
	if n := s.Stats().WillsPublished; n != 0 {
		t.Fatalf("%d wills published", n)
	}
}

// TestWillDelayCancelledOnReconnect: a will with a delay waits; reconnecting
// within the delay cancels it; without reconnecting, session expiry (shorter
// than the delay) publishes it.
func TestWillDelayCancelledOnReconnect(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	watcher := dialRaw(t, addr, packet.V5)
	watcher.mustConnect("watcher", true)
	watcher.subscribe(1, "will/#", 0)

	c := dialRaw(t, addr, packet.V5)
	c.connect(rawConnect{id: "w", clean: true, expiry: 600, will: "will/w", willPayload: "x", willDelay: 3600}.packet())
	c.nc.Close()
	waitFor(t, "session offline", func() bool { return s.Stats().ClientsDisconnected == 1 })
	c2 := dialRaw(t, addr, packet.V5)
	if ack := c2.connect(rawConnect{id: "w", expiry: 1}.packet()); !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	c2.send(&packet.Disconnect{Reason: packet.DisconnectWithWill}) // c2 itself has no will
	c2.closed()
	// A session expiry shorter than the will delay: the will goes out when
	// the session ends.
	c3 := dialRaw(t, addr, packet.V5)
	c3.connect(rawConnect{id: "w3", clean: true, expiry: 1, will: "will/w3", willPayload: "ended", willDelay: 3600}.packet())
	c3.nc.Close()
	m := watcher.nextPublish()
	if string(m.Topic) != "will/w3" {
		t.Fatalf("first will published is %q, want will/w3 (will/w was cancelled)", m.Topic)
	}
}

// TestDisconnectWithWillV5: DISCONNECT 0x04 publishes the will.
func TestDisconnectWithWillV5(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	watcher := dialRaw(t, addr, packet.V5)
	watcher.mustConnect("watcher", true)
	watcher.subscribe(1, "will/#", 0)
	c := dialRaw(t, addr, packet.V5)
	c.connect(rawConnect{id: "x", clean: true, will: "will/x", willPayload: "bye"}.packet())
	c.send(&packet.Disconnect{Reason: packet.DisconnectWithWill})
	if m := watcher.nextPublish(); string(m.Payload) != "bye" {
		t.Fatalf("will %q", m.Payload)
	}
}

// TestPersistentSessionRedelivery: a 3.1.1 persistent session keeps its
// subscription and QoS 1/2 messages while offline; on reconnect an
// unacknowledged QoS 1 message comes again with DUP set, a QoS 2 message
// whose PUBREC was sent comes back as PUBREL, then the queued ones follow.
func TestPersistentSessionRedelivery(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V311)
	c.mustConnect("keep", false)
	c.subscribe(1, "t/#", 2)

	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	pub.publish("t/1", 1, false, 1, "first")
	pub.nextAck(packet.PUBACK)
	pub.publish("t/2", 2, false, 2, "second")
	pub.nextAck(packet.PUBREC)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 2})
	pub.nextAck(packet.PUBCOMP)

	first := c.nextPublish()
	second := c.nextPublish()
	if string(first.Payload) != "first" || second.QoS != 2 {
		t.Fatalf("got %q %q", first.Payload, second.Payload)
	}
	c.send(&packet.Ack{Kind: packet.PUBREC, PacketID: second.PacketID})
	c.nextAck(packet.PUBREL)
	// Drop the connection without acknowledging anything else.
	c.nc.Close()
	waitFor(t, "session offline", func() bool { return s.Stats().ClientsDisconnected == 1 })

	pub.publish("t/3", 1, false, 3, "queued")
	pub.nextAck(packet.PUBACK)
	pub.publish("t/4", 0, false, 0, "qos0 offline is not queued")

	c2 := dialRaw(t, addr, packet.V311)
	if ack := c2.mustConnect("keep", false); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	again := c2.nextPublish()
	if !again.Dup || again.PacketID != first.PacketID || string(again.Payload) != "first" {
		t.Fatalf("redelivery: %+v", again)
	}
	rel := c2.nextAck(packet.PUBREL)
	if rel.PacketID != second.PacketID {
		t.Fatalf("PUBREL id %d, want %d", rel.PacketID, second.PacketID)
	}
	queued := c2.nextPublish()
	if queued.Dup || string(queued.Payload) != "queued" {
		t.Fatalf("queued: %+v", queued)
	}
	c2.send(&packet.Ack{Kind: packet.PUBACK, PacketID: again.PacketID})
	c2.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: rel.PacketID})
	c2.send(&packet.Ack{Kind: packet.PUBACK, PacketID: queued.PacketID})
	waitFor(t, "queue empty", func() bool { return s.Stats().Queued == 0 })
}

// TestCleanSessionDiscardsState: connecting with clean session drops what the
// previous session had.
func TestCleanSessionDiscardsState(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V311)
	c.mustConnect("c", false)
	c.subscribe(1, "t", 1)
	c.send(&packet.Disconnect{})
	c.closed()
	c2 := dialRaw(t, addr, packet.V311)
	if ack := c2.mustConnect("c", true); ack.SessionPresent {
		t.Fatal("session present after clean session")
	}
	if n := s.Stats().Subscriptions; n != 0 {
		t.Fatalf("%d subscriptions left", n)
	}
}

// TestOfflineQueueBounds: a persistent session's queue holds at most
// MaxQueuedMessages; the rest is dropped and counted.
func TestOfflineQueueBounds(t *testing.T) {
	s, addr := startServer(t, func(c *Config) { c.MaxQueuedMessages = 3 }, Options{})
	c := dialRaw(t, addr, packet.V311)
	c.mustConnect("slow", false)
	c.subscribe(1, "t", 1)
	c.send(&packet.Disconnect{})
	c.closed()
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	for i := range 5 {
		pub.publish("t", 1, false, uint16(i+1), fmt.Sprint(i))
		pub.nextAck(packet.PUBACK)
	}
	st := s.Stats()
	if st.Queued != 3 || st.DroppedQueueFull != 2 || st.PublishDropped != 2 {
		t.Fatalf("queued %d, dropped %d (queue full %d)", st.Queued, st.PublishDropped, st.DroppedQueueFull)
	}
	c2 := dialRaw(t, addr, packet.V311)
	c2.mustConnect("slow", false)
	for i := range 3 {
		if p := c2.nextPublish(); string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, p.Payload)
		}
	}
}

// TestQueueBytesBound: MaxQueuedBytes bounds the queue as well.
func TestQueueBytesBound(t *testing.T) {
	s := &Server{cfg: Config{MaxQueuedBytes: 1000}}
	se := &session{id: "x", subs: map[string]state.Subscription{}}
	tx := s.begin()
	big := &message{size: 600}
	if !s.enqueueLocked(se, &outbound{msg: big, qos: 1}, &tx) {
		t.Fatal("first message refused")
	}
	if s.enqueueLocked(se, &outbound{msg: big, qos: 1}, &tx) {
		t.Fatal("second message accepted beyond MaxQueuedBytes")
	}
	if se.queuedBytes != 600 || s.stats.queueDrops.Load() != 1 {
		t.Fatalf("bytes %d drops %d", se.queuedBytes, s.stats.queueDrops.Load())
	}
}

// TestPacketIDAllocation: ids run 1..65535, wrap past 0 and skip ids still
// in flight.
func TestPacketIDAllocation(t *testing.T) {
	se := &session{inflight: map[uint16]*outbound{}}
	if id := se.allocPID(); id != 1 {
		t.Fatalf("first id %d", id)
	}
	se.inflight[2] = &outbound{}
	se.inflight[3] = &outbound{}
	if id := se.allocPID(); id != 4 {
		t.Fatalf("id %d, want 4 (2 and 3 in flight)", id)
	}
	se.nextPID = 65534
	se.inflight[1] = &outbound{}
	want := []uint16{65535, 4}
	delete(se.inflight, 4)
	for _, w := range want {
		if id := se.allocPID(); id != w {
			t.Fatalf("id %d, want %d", id, w)
		}
	}
	// With every id but one in flight the free one is found.
	se.inflight = map[uint16]*outbound{}
	for i := 1; i <= 65535; i++ {
		if i != 777 {
			se.inflight[uint16(i)] = &outbound{}
		}
	}
	if id := se.allocPID(); id != 777 {
		t.Fatalf("id %d, want 777", id)
	}
}
