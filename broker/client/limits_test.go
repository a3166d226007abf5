package client

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

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

// TestConnectCarriesOptions checks the CONNECT built from Options, v5
// properties and will included, and that a reconnection resumes rather than
// starts clean.
func TestConnectCarriesOptions(t *testing.T) {
	dial, servers := pipeDialer(t, packet.V5)
	type seen struct {
		clean                    bool
		keepAlive                uint16
		id, user, pass           string
		expiry                   uint32
		recvMax, aliasMax        uint16
		maxPacket                uint32
		user0                    string
		willTopic, willPayload   string
		willQoS                  byte
		willRetain               bool
		willDelay, willExpiry    uint32
		willContentType, willUP0 string
	}
	got := make(chan seen, 2)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for i := range 2 {
			s := <-servers
			p, ok := s.read().(*packet.Connect)
			if !ok {
				t.Error("no CONNECT")
				return
			}
			pp, wp := &p.Props, &p.WillProps
			got <- seen{
				clean: p.CleanStart, keepAlive: p.KeepAlive, id: string(p.ClientID),
				user: string(p.Username), pass: string(p.Password),
				expiry: pp.SessionExpiry, recvMax: pp.ReceiveMaximum, aliasMax: pp.TopicAliasMaximum,
				maxPacket: pp.MaximumPacketSize, user0: string(pp.User[0].Key) + "=" + string(pp.User[0].Value),
				willTopic: string(p.WillTopic), willPayload: string(p.WillPayload), willQoS: p.WillQoS, willRetain: p.WillRetain,
				willDelay: wp.WillDelay, willExpiry: wp.MessageExpiry, willContentType: string(wp.ContentType),
				willUP0: string(wp.User[0].Key) + "=" + string(wp.User[0].Value),
			}
			s.write(&packet.Connack{})
			s.finish()
			if i == 0 {
				s.nc.Close() // the first connection is lost at once
			}
		}
	}()
	connect(t, Options{
		Dialer: dial, ClientID: "gw-42", Username: "gw", Password: "secret", CleanStart: true,
		SessionExpiry: time.Hour, KeepAlive: 30 * time.Second, AutoReconnect: true, Backoff: fastBackoff,
		ConnectProperties: ConnectProperties{ReceiveMaximum: 10, TopicAliasMaximum: 5, MaximumPacketSize: 65536,
			UserProperties: []UserProperty{{"site", "plant-3"}}},
		Will: &Will{Message: Message{Topic: "gw/42/status", Payload: []byte("offline"), QoS: 1, Retain: true,
			MessageExpiry: 10 * time.Minute, ContentType: "text/plain", UserProperties: []UserProperty{{"why", "lost"}}},
			Delay: 30 * time.Second},
	})
	want := seen{clean: true, keepAlive: 30, id: "gw-42", user: "gw", pass: "secret", expiry: 3600, recvMax: 10,
		aliasMax: 5, maxPacket: 65536, user0: "site=plant-3", willTopic: "gw/42/status", willPayload: "offline",
		willQoS: 1, willRetain: true, willDelay: 30, willExpiry: 600, willContentType: "text/plain", willUP0: "why=lost"}
	if s := <-got; s != want {
		t.Fatalf("CONNECT\n got %+v\nwant %+v", s, want)
	}
	want.clean = false
	if s := <-got; s != want {
		t.Fatalf("reconnection CONNECT\n got %+v\nwant %+v", s, want)
	}
	<-finished
}
