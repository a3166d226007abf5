package broker

import (
	"net"
	"strings"
	"testing"

	"gatewayd/broker/packet"
)

func intPtr(v int) *int { return &v }

// ping checks that a connected client is still served.
func ping(t testing.TB, r *rawClient) {
	t.Helper()
	r.send(&packet.Pingreq{})
	if p := r.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v, want PINGRESP", p.Type())
	}
}

// max_connections: the connection beyond the limit gets v5 CONNACK 0x97
// (Quota exceeded) or 3.1.1 0x03 (Server unavailable) while the first N
// stay connected; once one leaves, a new client gets in.
func TestMaxConnectionsRefusesTheNextOne(t *testing.T) {
	s, addr := startServer(t, func(c *Config) { c.MaxConnections = 3 }, Options{})
	var first []*rawClient
	for i := range 3 {
		r, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "c" + itoa(i), clean: true}, "")
		if ack.Reason != packet.Success {
			t.Fatalf("connection %d: CONNACK %#x", i+1, ack.Reason)
		}
		first = append(first, r)
	}
	_, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "c4", clean: true}, "")
	if ack.Reason != packet.QuotaExceeded {
		t.Fatalf("4th connection (v5): CONNACK %#x, want 0x97", ack.Reason)
	}
	_, ack = connectRaw(t, addr, packet.V311, rawConnect{id: "c5", clean: true}, "")
	if ack.Reason != packet.V3RefusedServerUnavailable {
		t.Fatalf("5th connection (3.1.1): CONNACK %#x, want 0x03", ack.Reason)
	}
	for _, r := range first {
		ping(t, r)
	}
	if n := s.Stats().ConnectionsOverLimit; n != 2 {
		t.Fatalf("Stats.ConnectionsOverLimit = %d, want 2", n)
	}
	first[0].send(&packet.Disconnect{})
	first[0].closed()
	waitFor(t, "the refused and departed connections to close", func() bool { return s.open.Load() == 2 })
	if _, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "c6", clean: true}, ""); ack.Reason != packet.Success {
		t.Fatalf("after one left: CONNACK %#x, want 0", ack.Reason)
	}
}

// A listener's own max_connections bounds that listener only.
func TestListenerMaxConnections(t *testing.T) {
	s, _ := startServer(t, func(c *Config) {
		c.Listeners = []ListenerConfig{{Name: "small", Address: "127.0.0.1:0", MaxConnections: 1}, {Name: "big", Address: "127.0.0.1:0"}}
	}, Options{})
	small, big := s.Addrs()[0].String(), s.Addrs()[1].String()
	r, ack := connectRaw(t, small, packet.V5, rawConnect{id: "s1", clean: true}, "")
	if ack.Reason != packet.Success {
		t.Fatalf("first on small: %#x", ack.Reason)
	}
	if _, ack := connectRaw(t, small, packet.V5, rawConnect{id: "s2", clean: true}, ""); ack.Reason != packet.QuotaExceeded {
		t.Fatalf("second on small: CONNACK %#x, want 0x97", ack.Reason)
	}
	if _, ack := connectRaw(t, big, packet.V5, rawConnect{id: "b1", clean: true}, ""); ack.Reason != packet.Success {
		t.Fatalf("on big: CONNACK %#x, want 0", ack.Reason)
	}
	ping(t, r)
}

// max_connections_per_second_per_address: a flood of connections from one
// address has its excess closed at once (counted), while a connection from
// another address (127.0.0.2) is accepted.
func TestConnectionFloodFromOneAddressIsSlowed(t *testing.T) {
	s, addr := startServer(t, func(c *Config) {
		c.Listeners[0].MaxConnectionsPerSecondPerAddress = intPtr(2)
	}, Options{})
	accepted, closed := 0, 0
	for i := range 30 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		r := newRaw(t, nc, packet.V311)
		r.sendConnect(rawConnect{id: "flood" + itoa(i), clean: true}.packet())
		p, err := r.read()
		switch {
		case err != nil:
			closed++
		case p.Type() == packet.CONNACK:
			accepted++
		default:
			t.Fatalf("flood %d: got %v", i, p.Type())
		}
		nc.Close()
	}
	if closed == 0 || accepted == 0 {
		t.Fatalf("of 30 connections from one address %d were served and %d closed; want both", accepted, closed)
	}
	if n := s.Stats().ConnectionsRateLimited; n < uint64(closed) {
		t.Fatalf("Stats.ConnectionsRateLimited = %d, want at least %d", n, closed)
	}

	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		if strings.Contains(err.Error(), "assign requested address") {
			t.Skipf("cannot use 127.0.0.2 as a source address here: %v", err)
		}
		t.Fatalf("dial from 127.0.0.2: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	r := newRaw(t, nc, packet.V5)
	if ack := r.connect(rawConnect{id: "other", clean: true}.packet()); ack.Reason != packet.Success {
		t.Fatalf("from 127.0.0.2 during the flood: CONNACK %#x", ack.Reason)
	}
}

// max_subscriptions_per_client: a new filter beyond the limit gets v5 0x97
// (3.1.1 0x80); replacing an existing subscription is allowed, and room
// freed by UNSUBSCRIBE can be used again.
func TestMaxSubscriptionsPerClient(t *testing.T) {
	s, addr := startServer(t, func(c *Config) { c.MaxSubscriptionsPerClient = 2 }, Options{})
	r, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "subs", clean: true}, "")
	r.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: []byte("a"), QoS: 1}, {Filter: []byte("b"), QoS: 1}, {Filter: []byte("c"), QoS: 1}}})
	if rc := r.suback(1); len(rc) != 3 || rc[0] != 1 || rc[1] != 1 || rc[2] != packet.QuotaExceeded {
		t.Fatalf("SUBACK %v, want [1 1 0x97]", rc)
	}
	if rc := r.subscribe(2, "a", 0); rc[0] != 0 {
		t.Fatalf("replacing a: %v, want granted", rc)
	}
	r.send(&packet.Unsubscribe{PacketID: 3, Filters: [][]byte{[]byte("b")}})
	r.next()
	if rc := r.subscribe(4, "c", 1); rc[0] != 1 {
		t.Fatalf("c after unsubscribing b: %v, want granted", rc)
	}
	v3, _ := connectRaw(t, addr, packet.V311, rawConnect{id: "subs3", clean: true}, "")
	v3.subscribe(1, "x", 0)
	v3.subscribe(2, "y", 0)
	if rc := v3.subscribe(3, "z", 0); rc[0] != packet.V3SubackFailure {
		t.Fatalf("3.1.1 third filter: %v, want 0x80", rc)
	}
	if n := s.Stats().SubscriptionsRefused; n != 2 {
		t.Fatalf("Stats.SubscriptionsRefused = %d, want 2", n)
	}
}

// max_retained_messages and max_retained_bytes: a retained message for a
// new topic beyond a limit is refused (v5 PUBACK 0x97) and not routed;
// replacing or clearing an existing one is allowed.
func TestMaxRetainedMessages(t *testing.T) {
	s, addr := startServer(t, func(c *Config) {
		c.MaxRetainedMessages = 2
		c.MaxRetainedBytes = 40
	}, Options{})
	r, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "retainer", clean: true}, "")
	watcher, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "watcher", clean: true}, "")
	watcher.subscribe(1, "r/#", 0)
	// The broker sends the retained messages a subscription asks for after
	// SUBACK, then reads the next packet: once PINGRESP is back, none can
	// arrive late and be taken for a live one.
	ping(t, watcher)
	id := uint16(0)
	pub := func(topic, payload string, want packet.ReasonCode) {
		t.Helper()
		id++
		r.publish(topic, 1, true, id, payload)
		if a := r.nextAck(packet.PUBACK); a.Reason != want {
			t.Fatalf("retained PUBLISH %s %q: PUBACK %#x, want %#x", topic, payload, a.Reason, want)
		}
		if want == packet.Success {
			if m := watcher.nextPublish(); string(m.Topic) != topic || string(m.Payload) != payload {
				t.Fatalf("watcher got %s %q (retain %v), want %s %q (refused messages are not routed)", m.Topic, m.Payload, m.Retain, topic, payload)
			}
		}
	}
	pub("r/1", "one", packet.Success)
	pub("r/2", "two", packet.Success)
	pub("r/3", "three", packet.QuotaExceeded) // a third topic
	pub("r/1", "one again", packet.Success)   // replacing is allowed
	pub("r/2", "", packet.Success)            // clearing is allowed
	pub("r/3", "three", packet.Success)       // room again
	// Bytes: r/1 (3+9) + r/3 (3+5) = 20; replacing r/3 with 26 bytes of
	// payload would make 41.
	pub("r/3", strings.Repeat("x", 26), packet.QuotaExceeded)
	pub("r/3", strings.Repeat("x", 25), packet.Success)
	if n := s.Stats().RetainedRefused; n != 2 {
		t.Fatalf("Stats.RetainedRefused = %d, want 2", n)
	}

	late, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "late", clean: true}, "")
	late.subscribe(1, "r/#", 0)
	got := map[string]string{}
	for range 2 {
		m := late.nextPublish()
		got[string(m.Topic)] = string(m.Payload)
	}
	if got["r/1"] != "one again" || got["r/3"] != strings.Repeat("x", 25) {
		t.Fatalf("retained messages %v", got)
	}
}
