package client

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

// fakeServer plays the server's side of a scripted exchange over net.Pipe,
// for what a real broker cannot be made to do on demand.
type fakeServer struct {
	t   *testing.T
	nc  net.Conn
	rd  packetReader
	dec packet.Decoder
}

// pipeClient returns options whose Dialer connects to a fake server, and a
// channel delivering the fake server for each connection.
func pipeDialer(t *testing.T, v packet.Version) (func(context.Context) (net.Conn, error), chan *fakeServer) {
	servers := make(chan *fakeServer, 4)
	return func(ctx context.Context) (net.Conn, error) {
		cc, sc := net.Pipe()
		s := &fakeServer{t: t, nc: sc, rd: packetReader{r: sc, buf: make([]byte, 4096)}, dec: packet.Decoder{Version: v}}
		t.Cleanup(func() { sc.Close() })
		servers <- s
		return cc, nil
	}, servers
}

// read returns the next packet from the client; it is valid until the next
// read.
func (s *fakeServer) read() packet.Packet {
	s.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	h, body, err := s.rd.next(&s.dec)
	if err != nil {
		s.t.Errorf("fake server: read: %v", err)
		return nil
	}
	p, err := s.dec.Decode(h, body)
	if err != nil {
		s.t.Errorf("fake server: decode: %v", err)
		return nil
	}
	return p
}

func (s *fakeServer) write(p packet.Packet) {
	b, err := packet.Append(nil, p, s.dec.Version)
	if err != nil {
		s.t.Errorf("fake server: encode %v: %v", p.Type(), err)
		return
	}
	s.nc.SetWriteDeadline(time.Now().Add(20 * time.Second))
	if _, err := s.nc.Write(b); err != nil {
		s.t.Errorf("fake server: write %v: %v", p.Type(), err)
	}
}

// accept reads CONNECT and answers with ack.
func (s *fakeServer) accept(ack *packet.Connack) {
	if p, ok := s.read().(*packet.Connect); !ok {
		s.t.Errorf("fake server: first packet %v, want CONNECT", p)
		return
	}
	s.write(ack)
}

// finish reads and discards whatever else the client sends.
func (s *fakeServer) finish() {
	s.nc.SetReadDeadline(time.Time{})
	go io.Copy(io.Discard, s.nc)
}

func (s *fakeServer) expectAck(kind packet.Type, id uint16) {
	s.t.Helper()
	p := s.read()
	if a, ok := p.(*packet.Ack); !ok || a.Kind != kind || a.PacketID != id {
		s.t.Errorf("fake server: got %#v, want %v %d", p, kind, id)
	}
}

// subscribe answers the client's SUBSCRIBE, granting what it asked.
func (s *fakeServer) subscribe() {
	p, ok := s.read().(*packet.Subscribe)
	if !ok {
		s.t.Errorf("fake server: want SUBSCRIBE")
		return
	}
	ack := &packet.Suback{PacketID: p.PacketID}
	for _, sub := range p.Subscriptions {
		ack.Reasons = append(ack.Reasons, packet.ReasonCode(sub.QoS))
	}
	s.write(ack)
}

// serveSubscribed plays the fake server of the next connection from servers:
// it accepts the CONNECT with a plain CONNACK, grants the SUBSCRIBE, then runs
// script. The channel returned is closed when script has returned.
func serveSubscribed(servers chan *fakeServer, script func(s *fakeServer)) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := <-servers
		s.accept(&packet.Connack{})
		s.subscribe()
		script(s)
	}()
	return done
}

func TestInboundQoS2DeliveredExactlyOnce(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			dial, servers := pipeDialer(t, ver.v)
			got := newCollector()
			done := serveSubscribed(servers, func(s *fakeServer) {
				pub := func(dup bool, payload string) {
					s.write(&packet.Publish{Dup: dup, QoS: 2, PacketID: 7, Topic: []byte("q2/in"), Payload: []byte(payload)})
				}
				pub(false, "a")
				s.expectAck(packet.PUBREC, 7)
				pub(true, "a") // PUBREC lost, say: sent again before PUBREL
				s.expectAck(packet.PUBREC, 7)
				s.write(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
				s.expectAck(packet.PUBCOMP, 7)
				pub(false, "b") // the id is free again after PUBCOMP
				s.expectAck(packet.PUBREC, 7)
				s.finish()
			})
			c := connect(t, Options{Dialer: dial, Protocol: ver.v, KeepAlive: -1, ClientID: "q2"})
			if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "q2/#", QoS: 2}); err != nil {
				t.Fatal(err)
			}
			<-done
			if m := got.next(t); string(m.Payload) != "a" {
				t.Fatalf("first %q", m.Payload)
			}
			if m := got.next(t); string(m.Payload) != "b" {
				t.Fatalf("second %q: the resent PUBLISH was delivered again", m.Payload)
			}
		})
	}
}

func TestInboundTopicAliases(t *testing.T) {
	dial, servers := pipeDialer(t, packet.V5)
	got := newCollector()
	states := newStateLog()
	done := serveSubscribed(servers, func(s *fakeServer) {
		aliased := func(topic string, alias uint16, payload string) {
			p := &packet.Publish{Topic: []byte(topic), Payload: []byte(payload)}
			p.Props.TopicAlias = alias
			p.Props.Set(packet.PropTopicAlias)
			s.write(p)
		}
		aliased("sensors/bme280/temp", 3, "1")
		aliased("", 3, "2")
		aliased("sensors/bme280/hum", 3, "3") // alias re-pointed
		aliased("", 3, "4")
		aliased("", 9, "5") // above the maximum the client announced
		if d, ok := s.read().(*packet.Disconnect); !ok || d.Reason != packet.TopicAliasInvalid {
			t.Errorf("client answered an invalid alias with %#v, want DISCONNECT 0x94", d)
		}
		s.finish()
	})
	c := connect(t, Options{Dialer: dial, KeepAlive: -1, ConnectProperties: ConnectProperties{TopicAliasMaximum: 5},
		OnConnectionChange: states.record})
	if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "sensors/#"}); err != nil {
		t.Fatal(err)
	}
	<-done
	for _, want := range []string{"sensors/bme280/temp 1", "sensors/bme280/temp 2", "sensors/bme280/hum 3", "sensors/bme280/hum 4"} {
		if m := got.next(t); m.Topic+" "+string(m.Payload) != want {
			t.Fatalf("got %s %s, want %s", m.Topic, m.Payload, want)
		}
	}
	states.wait(t, StateDisconnected)
	var pe *packet.Error
	if err := states.lastErr(); !errors.As(err, &pe) || pe.Reason != packet.TopicAliasInvalid {
		t.Fatalf("connection ended with %v", err)
	}
}

func TestReceiveMaximumWindow(t *testing.T) {
	const window, n = 3, 20
	dial, servers := pipeDialer(t, packet.V5)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := <-servers
		ack := &packet.Connack{}
		ack.Props.ReceiveMaximum = window
		ack.Props.Set(packet.PropReceiveMaximum)
		s.accept(ack)
		inflight := map[uint16]bool{}
		var order []uint16
		acked := 0
		for acked < n {
			switch p := s.read().(type) {
			case *packet.Publish:
				if inflight[p.PacketID] {
					t.Errorf("packet id %d reused while in flight", p.PacketID)
				}
				inflight[p.PacketID] = true
				order = append(order, p.PacketID)
				if len(inflight) > window {
					t.Errorf("%d PUBLISH in flight, server's Receive Maximum is %d", len(inflight), window)
				}
			case *packet.Pingreq:
				// The client's marker: everything it could send before is
				// here. Acknowledge the oldest message to open the window.
				if len(order) == 0 {
					t.Errorf("window empty at a marker")
					return
				}
				id := order[0]
				order = order[1:]
				delete(inflight, id)
				s.write(&packet.Ack{Kind: packet.PUBACK, PacketID: id})
				acked++
				if acked == n {
					s.finish()
				}
			case nil:
				return
			default:
				t.Errorf("unexpected %v", p.Type())
			}
		}
	}()
	c := connect(t, Options{Dialer: dial, KeepAlive: -1})
	errs := make(chan error, n)
	for i := range n {
		c.PublishAsync(&Message{Topic: "window", Payload: []byte{byte(i)}, QoS: 1}, func(err error) { errs <- err })
	}
	for range n {
		// A PINGREQ queued behind whatever the window let through marks the
		// point where the server checks the window, then frees one place.
		c.mu.Lock()
		c.conn.send(&packet.Pingreq{}, nil)
		c.mu.Unlock()
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	<-done
}

func TestServerReasonsSurfaced(t *testing.T) {
	dial, servers := pipeDialer(t, packet.V5)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := <-servers
		s.accept(&packet.Connack{})
		p := s.read().(*packet.Publish)
		ack := &packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID, Reason: packet.NotAuthorized}
		ack.Props.ReasonString = []byte("topic denied by policy")
		s.write(ack)
		d := &packet.Disconnect{Reason: packet.SessionTakenOver}
		d.Props.ReasonString = []byte("another gateway uses this id")
		s.write(d)
		s.finish()
	}()
	states := newStateLog()
	c := connect(t, Options{Dialer: dial, KeepAlive: -1, OnConnectionChange: states.record})
	err := c.Publish(testCtx(t), &Message{Topic: "denied", QoS: 1})
	var re *ReasonError
	if !errors.As(err, &re) || re.Reason != packet.NotAuthorized || re.ReasonString != "topic denied by policy" || re.Topic != "denied" {
		t.Fatalf("publish: %v", err)
	}
	<-done
	states.wait(t, StateDisconnected)
	if err := states.lastErr(); !errors.As(err, &re) || re.Reason != packet.SessionTakenOver || re.ReasonString != "another gateway uses this id" {
		t.Fatalf("server disconnect reported as %v", err)
	}
}

func TestConnackRefusal(t *testing.T) {
	for _, tc := range []struct {
		v    packet.Version
		code packet.ReasonCode
	}{{packet.V5, packet.BadUserNameOrPassword}, {packet.V311, packet.V3RefusedNotAuthorized}} {
		dial, servers := pipeDialer(t, tc.v)
		go func() {
			s := <-servers
			ack := &packet.Connack{Reason: tc.code}
			if tc.v == packet.V5 {
				ack.Props.ReasonString = []byte("wrong password")
			}
			s.accept(ack)
			s.finish()
		}()
		c, err := New(Options{Dialer: dial, Protocol: tc.v, Username: "u", Password: "p", CleanStart: true})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Connect(testCtx(t))
		var re *ReasonError
		if !errors.As(err, &re) || re.Reason != tc.code {
			t.Fatalf("v%d: Connect: %v", tc.v, err)
		}
		t.Logf("v%d: %v", tc.v, err)
	}
}
