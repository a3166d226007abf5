package client

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

// With ManualAck nothing is acknowledged until the application says so, and
// acknowledgements leave in the order the messages arrived whatever the order
// of the Ack calls: a QoS 2 PUBLISH sent again before PUBREL and a message
// that matches no handler wait behind the messages before them.
func TestManualAckInArrivalOrder(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			dial, servers := pipeDialer(t, ver.v)
			got := newCollector()
			done := serveSubscribed(servers, func(s *fakeServer) {
				s.write(&packet.Publish{QoS: 1, PacketID: 1, Topic: []byte("in/a"), Payload: []byte("x")})
				s.write(&packet.Publish{QoS: 2, PacketID: 7, Topic: []byte("in/a"), Payload: []byte("a")})
				s.write(&packet.Publish{Dup: true, QoS: 2, PacketID: 7, Topic: []byte("in/a"), Payload: []byte("a")})
				s.write(&packet.Publish{QoS: 1, PacketID: 9, Topic: []byte("other/t"), Payload: []byte("nobody's")})
				s.write(&packet.Publish{QoS: 0, Topic: []byte("in/a"), Payload: []byte("q0")})
				s.write(&packet.Publish{QoS: 1, PacketID: 2, Topic: []byte("in/a"), Payload: []byte("y")})
				// The test publishes a probe before any Ack: nothing was
				// acknowledged before it. Then it acknowledges y, a, q0 and
				// x: the acknowledgements leave in arrival order.
				s.expectProbe()
				s.expectAck(packet.PUBACK, 1)
				s.expectAck(packet.PUBREC, 7)
				s.expectAck(packet.PUBREC, 7)
				s.expectAck(packet.PUBACK, 9)
				s.expectAck(packet.PUBACK, 2)
				// x acknowledged again sends nothing more.
				s.write(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
				s.expectAck(packet.PUBCOMP, 7)
				s.finish()
			})
			c := connect(t, Options{Dialer: dial, Protocol: ver.v, KeepAlive: -1, ClientID: "manual", ManualAck: true})
			if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "in/#", QoS: 2}); err != nil {
				t.Fatal(err)
			}
			var ms []*Message
			for _, want := range []string{"x", "a", "q0", "y"} {
				m := got.next(t)
				if string(m.Payload) != want {
					t.Fatalf("got %q, want %q", m.Payload, want)
				}
				ms = append(ms, m)
			}
			x, a, q0, y := ms[0], ms[1], ms[2], ms[3]
			probe(t, c)
			y.Ack()
			a.Ack()
			q0.Ack()
			x.Ack()
			x.Ack()
			<-done
		})
	}
}

// A message whose connection was lost before its Ack is not acknowledged on
// the next connection (the server sends it again, and that copy is), and it
// holds back the acknowledgements of what came after it until it is
// acknowledged.
func TestManualAckAcrossReconnect(t *testing.T) {
	dial, servers := pipeDialer(t, packet.V5)
	got := newCollector()
	second := make(chan struct{})
	done := serveSubscribed(servers, func(s *fakeServer) {
		s.write(&packet.Publish{QoS: 1, PacketID: 1, Topic: []byte("in/a"), Payload: []byte("x")})
		<-second
		s.nc.Close()
		s = <-servers
		s.accept(&packet.Connack{SessionPresent: true})
		s.write(&packet.Publish{Dup: true, QoS: 1, PacketID: 1, Topic: []byte("in/a"), Payload: []byte("x")})
		s.write(&packet.Publish{QoS: 1, PacketID: 2, Topic: []byte("in/a"), Payload: []byte("y")})
		s.expectProbe()
		s.expectAck(packet.PUBACK, 1)
		s.expectAck(packet.PUBACK, 2)
		s.finish()
	})
	c := connect(t, Options{Dialer: dial, KeepAlive: -1, ClientID: "manual", ManualAck: true,
		AutoReconnect: true, Backoff: Backoff{Base: time.Millisecond, Cap: 10 * time.Millisecond}})
	if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "in/#", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	first := got.next(t)
	close(second)
	again, y := got.next(t), got.next(t)
	if string(again.Payload) != "x" || !again.Dup || string(y.Payload) != "y" {
		t.Fatalf("after the reconnect: %q (dup %v), %q", again.Payload, again.Dup, y.Payload)
	}
	y.Ack()
	again.Ack()
	probe(t, c) // held back behind the first copy
	first.Ack() // its connection is gone: releases the two behind it
	<-done
}

// probe publishes a QoS 0 message: what the client sent before it reaches
// the server before it.
func probe(t *testing.T, c *Client) {
	t.Helper()
	if err := c.Publish(testCtx(t), &Message{Topic: "probe", Payload: []byte("p")}); err != nil {
		t.Fatal(err)
	}
}

func (s *fakeServer) expectProbe() {
	s.t.Helper()
	p := s.read()
	if pp, ok := p.(*packet.Publish); !ok || string(pp.Topic) != "probe" {
		s.t.Errorf("fake server: got %#v, want the probe (nothing acknowledged before it)", p)
	}
}

// Messages read from a connection that ends before the handler could take
// them are not delivered out of order: what is delivered of a connection is
// a prefix of what it carried (the server sends the rest again).
func TestNoGapWhenConnectionEndsBehindBusyHandler(t *testing.T) {
	dial, servers := pipeDialer(t, packet.V311)
	var mu sync.Mutex
	var got []int
	first := make(chan struct{})
	release := make(chan struct{})
	handler := func(m *Message) {
		v, _ := strconv.Atoi(string(m.Payload))
		mu.Lock()
		got = append(got, v)
		n := len(got)
		mu.Unlock()
		if n == 1 {
			close(first)
			<-release
		}
	}
	var s *fakeServer
	accepted := make(chan struct{})
	serveSubscribed(servers, func(fs *fakeServer) {
		s = fs
		close(accepted)
		var burst []byte
		for i := range 300 {
			burst, _ = packet.Append(burst, &packet.Publish{QoS: 1, PacketID: uint16(i + 1), Topic: []byte("in/a"), Payload: []byte(strconv.Itoa(i))}, packet.V311)
		}
		s.nc.Write(burst) // cut short when the test closes the connection
	})
	c := connect(t, Options{Dialer: dial, Protocol: packet.V311, KeepAlive: -1, ClientID: "gap", CleanStart: true})
	if _, err := c.Subscribe(testCtx(t), handler, Subscription{Filter: "in/#", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	<-accepted
	<-first
	// Let the reader fill the handler queue and wait behind it.
	for c.State() == StateConnected && len(c.deliveries) < cap(c.deliveries) {
		time.Sleep(time.Millisecond)
	}
	s.nc.Close()
	// A write fails: the connection ends while the reader still holds
	// packets it has read.
	c.Publish(testCtx(t), &Message{Topic: "probe", Payload: []byte("p")})
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for c.State() == StateConnected {
		if time.Now().After(deadline) {
			t.Fatal("connection not seen ended")
		}
		time.Sleep(time.Millisecond)
	}
	c.Disconnect(testCtx(t))
	mu.Lock()
	defer mu.Unlock()
	for i, v := range got {
		if v != i {
			t.Fatalf("delivered %d after %d: a message in between was dropped (delivered %d)", v, i-1, len(got))
		}
	}
	t.Logf("delivered %d of 300 before the connection ended", len(got))
}
