package client

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"gatewayd/broker/packet"
)

// TestServerLimitsRespected covers what a cloud broker announces in CONNACK
// (AWS IoT Core: no QoS 2; Azure IoT Hub: no retain; a packet size limit).
func TestServerLimitsRespected(t *testing.T) {
	dial, servers := pipeDialer(t, packet.V5)
	go func() {
		s := <-servers
		ack := &packet.Connack{}
		ack.Props.MaximumQoS, ack.Props.RetainAvailable, ack.Props.MaximumPacketSize = 1, 0, 128
		ack.Props.Set(packet.PropMaximumQoS)
		ack.Props.Set(packet.PropRetainAvailable)
		ack.Props.Set(packet.PropMaximumPacketSize)
		s.accept(ack)
		s.finish()
	}()
	c := connect(t, Options{Dialer: dial, KeepAlive: -1})
	if si := c.Server(); si.MaximumQoS != 1 || si.RetainAvailable || si.MaximumPacketSize != 128 {
		t.Fatalf("server info %+v", si)
	}
	for _, tc := range []struct {
		m    *Message
		want packet.ReasonCode
	}{
		{&Message{Topic: "t", QoS: 2}, packet.QoSNotSupported},
		{&Message{Topic: "t", Retain: true}, packet.RetainNotSupported},
		{&Message{Topic: "t", Payload: make([]byte, 200)}, packet.PacketTooLarge},
		{&Message{Topic: "t", Payload: make([]byte, 200), QoS: 1}, packet.PacketTooLarge},
	} {
		var re *ReasonError
		if err := c.Publish(testCtx(t), tc.m); !errors.As(err, &re) || re.Reason != tc.want {
			t.Errorf("publish QoS %d retain %v %d bytes: %v, want reason %#x", tc.m.QoS, tc.m.Retain, len(tc.m.Payload), err, byte(tc.want))
		}
	}
	if err := c.Publish(testCtx(t), &Message{Topic: "t", Payload: make([]byte, 64)}); err != nil {
		t.Fatalf("a message within the limits: %v", err)
	}
}

// TestPendingQueueBoundAndCancel fills the server's window (1) and the
// client's pending queue (MaxPending 2): the next message is refused at once,
// and a pending message whose Publish is cancelled is never sent.
func TestPendingQueueBoundAndCancel(t *testing.T) {
	dial, servers := pipeDialer(t, packet.V5)
	sent := make(chan string, 10)
	ackFirst := make(chan struct{})
	go func() {
		s := <-servers
		ack := &packet.Connack{}
		ack.Props.ReceiveMaximum = 1
		ack.Props.Set(packet.PropReceiveMaximum)
		s.accept(ack)
		for {
			p := s.read()
			pub, ok := p.(*packet.Publish)
			if !ok {
				s.finish()
				return
			}
			sent <- string(pub.Payload)
			if string(pub.Payload) == "first" {
				<-ackFirst
			}
			s.write(&packet.Ack{Kind: packet.PUBACK, PacketID: pub.PacketID})
		}
	}()
	c := connect(t, Options{Dialer: dial, KeepAlive: -1, MaxPending: 2})
	done := make(chan error, 4)
	c.PublishAsync(&Message{Topic: "t", Payload: []byte("first"), QoS: 1}, func(err error) { done <- err })
	if p := <-sent; p != "first" {
		t.Fatalf("sent %q", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() { cancelled <- c.Publish(ctx, &Message{Topic: "t", Payload: []byte("cancelled"), QoS: 1}) }()
	for {
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		if n == 1 {
			break
		}
		runtime.Gosched()
	}
	c.PublishAsync(&Message{Topic: "t", Payload: []byte("third"), QoS: 1}, func(err error) { done <- err })
	var full error
	c.PublishAsync(&Message{Topic: "t", Payload: []byte("refused"), QoS: 1}, func(err error) { full = err })
	if !errors.Is(full, ErrQueueFull) {
		t.Fatalf("beyond MaxPending: %v", full)
	}
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled publish: %v", err)
	}
	close(ackFirst)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if p := <-sent; p != "third" {
		t.Fatalf("after the first, the server got %q, want third (the cancelled one is dropped)", p)
	}
}
