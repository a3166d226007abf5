package broker

import (
	"io"
	"net"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

// FuzzConnection feeds a byte stream to a live broker as one client's
// connection (over net.Pipe, through ServeConn), optionally after a valid
// CONNECT chosen by mode: 0 none, 1 MQTT 3.1.1, 2 MQTT 5.0, 3 MQTT 3.1.
// Whatever the bytes, the broker must not panic, must end or keep serving
// that connection only, and a well-behaved client must still be able to
// subscribe, publish and receive afterwards (checked after every input).
// The seed corpus in testdata/fuzz/FuzzConnection holds valid sessions of
// each version and malformed streams; fuzzSeeds builds it.
func FuzzConnection(f *testing.F) {
	for _, sd := range fuzzSeeds(f) {
		f.Add(sd.mode, sd.data)
	}
	s := fuzzServer(f)
	probes := 0
	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		cl, sv := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.ServeConn(sv, "fuzz")
		}()
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, cl)
		}()
		stream := append(fuzzPrefix(t, mode), data...)
		// The broker may stop reading (it closed the connection, or waits
		// for the rest of a packet): the deadline ends a blocked write.
		cl.SetWriteDeadline(time.Now().Add(2 * time.Second))
		cl.Write(stream)
		cl.Close()
		<-done
		<-drained

		probes++
		probeBroker(t, s, probes)
	})
}

// fuzzServer is the broker FuzzConnection talks to: sessions end with
// their connections, so a long run does not pile up fuzzed sessions.
func fuzzServer(tb testing.TB) *Server {
	cfg := DefaultConfig()
	cfg.SysInterval = 0
	cfg.MaxSessionExpiry = 0
	cfg.ConnectTimeout = 2 * time.Second
	cfg.MaxPacketSize = 64 << 10
	s, err := New(cfg, Options{Logger: testLogger()})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { shutdown(tb, s) })
	return s
}

// probeBroker checks that a new, well-behaved client is served: it
// subscribes, publishes at QoS 1 and receives its own message.
func probeBroker(t *testing.T, s *Server, n int) {
	t.Helper()
	cl, sv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(sv, "probe")
	}()
	defer func() {
		cl.Close()
		<-done
	}()
	r := newRaw(t, cl, packet.V5)
	// The id and topic carry a character a fuzzed client id cannot
	// easily take over by chance between runs.
	id := "probe\u00e9" + itoa(n)
	r.mustConnect(id, true)
	topic := "probe\u00e9/" + itoa(n)
	if rc := r.subscribe(1, topic, 1); len(rc) != 1 || rc[0] != 1 {
		t.Fatalf("probe SUBACK %v, want [1]", rc)
	}
	r.publish(topic, 1, false, 2, "still here")
	gotAck, gotMsg := false, false
	for !gotAck || !gotMsg {
		switch p := r.next().(type) {
		case *packet.Ack:
			if p.Kind == packet.PUBACK && p.PacketID == 2 {
				gotAck = true
			}
		case *packet.Publish:
			if string(p.Topic) == topic && string(p.Payload) == "still here" {
				gotMsg = true
				if p.QoS == 1 {
					r.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
				}
			}
		}
	}
	r.send(&packet.Disconnect{})
}

// fuzzPrefix is the valid CONNECT mode asks for.
func fuzzPrefix(tb testing.TB, mode byte) []byte {
	var v packet.Version
	name := "MQTT"
	switch mode % 4 {
	case 0:
		return nil
	case 1:
		v = packet.V311
	case 2:
		v = packet.V5
	case 3:
		v, name = packet.V31, "MQIsdp"
	}
	b, err := packet.Append(nil, &packet.Connect{ProtocolName: []byte(name), Version: v, CleanStart: true,
		KeepAlive: 30, ClientID: []byte("fuzz")}, v)
	if err != nil {
		tb.Fatalf("encoding CONNECT: %v", err)
	}
	return b
}

type fuzzSeed struct {
	name string
	mode byte
	data []byte
}

// fuzzSeeds are the seed corpus: a valid session of each version, the same
// packets after a CONNECT the mode provides, and malformed streams.
func fuzzSeeds(tb testing.TB) []fuzzSeed {
	enc := func(v packet.Version, ps ...packet.Packet) []byte {
		var b []byte
		for _, p := range ps {
			var err error
			if b, err = packet.Append(b, p, v); err != nil {
				tb.Fatalf("encoding %v: %v", p.Type(), err)
			}
		}
		return b
	}
	connect := func(v packet.Version, id string) *packet.Connect {
		name := "MQTT"
		if v == packet.V31 {
			name = "MQIsdp"
		}
		return &packet.Connect{ProtocolName: []byte(name), Version: v, CleanStart: true, KeepAlive: 30, ClientID: []byte(id)}
	}
	session := func(v packet.Version) []packet.Packet {
		return []packet.Packet{
			&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: []byte("a/#"), QoS: 2}, {Filter: []byte("+/b"), QoS: 0}}},
			&packet.Publish{Topic: []byte("a/b"), Payload: []byte("zero")},
			&packet.Publish{Topic: []byte("a/b"), QoS: 1, PacketID: 2, Payload: []byte("one")},
			&packet.Publish{Topic: []byte("a/c"), QoS: 2, PacketID: 3, Retain: true, Payload: []byte("two")},
			&packet.Ack{Kind: packet.PUBREL, PacketID: 3},
			&packet.Ack{Kind: packet.PUBACK, PacketID: 1},
			&packet.Pingreq{},
			&packet.Unsubscribe{PacketID: 4, Filters: [][]byte{[]byte("a/#")}},
			&packet.Publish{Topic: []byte("a/c"), QoS: 1, PacketID: 5, Retain: true},
			&packet.Disconnect{},
		}
	}
	v5Session := func() []packet.Packet {
		c := connect(packet.V5, "fuzz5")
		c.Props.SessionExpiry = 60
		c.Props.Set(packet.PropSessionExpiry)
		c.Props.TopicAliasMaximum = 4
		c.Props.Set(packet.PropTopicAliasMaximum)
		c.WillFlag, c.WillTopic, c.WillPayload, c.WillQoS = true, []byte("will/fuzz5"), []byte("gone"), 1
		sub := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
			{Filter: []byte("a/#"), QoS: 1, NoLocal: true, RetainHandling: 1},
			{Filter: []byte("$share/g/a/+"), QoS: 2},
		}}
		sub.Props.SubscriptionIDs = []uint32{7}
		aliased := &packet.Publish{Topic: []byte("a/alias"), QoS: 1, PacketID: 2, Payload: []byte("set alias")}
		aliased.Props.TopicAlias = 1
		aliased.Props.Set(packet.PropTopicAlias)
		byAlias := &packet.Publish{QoS: 0, Payload: []byte("by alias")}
		byAlias.Props.TopicAlias = 1
		byAlias.Props.Set(packet.PropTopicAlias)
		expiring := &packet.Publish{Topic: []byte("a/exp"), Retain: true, Payload: []byte("soon")}
		expiring.Props.MessageExpiry = 1
		expiring.Props.Set(packet.PropMessageExpiry)
		return []packet.Packet{c, sub, aliased, byAlias, expiring,
			&packet.Publish{Topic: []byte("a/q2"), QoS: 2, PacketID: 3, Payload: []byte("x")},
			&packet.Ack{Kind: packet.PUBREL, PacketID: 3},
			&packet.Disconnect{Reason: packet.DisconnectWithWill}}
	}
	var seeds []fuzzSeed
	for name, v := range map[string]packet.Version{"session-v31": packet.V31, "session-v311": packet.V311} {
		seeds = append(seeds, fuzzSeed{name, 0, enc(v, append([]packet.Packet{connect(v, "fuzz"+itoa(int(v)))}, session(v)...)...)})
	}
	seeds = append(seeds,
		fuzzSeed{"session-v5", 0, enc(packet.V5, v5Session()...)},
		fuzzSeed{"after-connect-v311", 1, enc(packet.V311, session(packet.V311)...)},
		fuzzSeed{"after-connect-v5", 2, enc(packet.V5, session(packet.V5)...)},
		fuzzSeed{"after-connect-v31", 3, enc(packet.V31, session(packet.V31)...)},
		// Malformed.
		fuzzSeed{"truncated-connect", 0, enc(packet.V311, connect(packet.V311, "cut"))[:9]},
		fuzzSeed{"remaining-length-5-bytes", 0, []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f}},
		fuzzSeed{"publish-before-connect", 0, enc(packet.V311, &packet.Publish{Topic: []byte("a"), Payload: []byte("x")})},
		fuzzSeed{"second-connect", 1, enc(packet.V311, connect(packet.V311, "again"))},
		fuzzSeed{"bad-utf8-topic", 1, []byte{0x30, 0x05, 0x00, 0x02, 0xc3, 0x28, 'x'}},
		fuzzSeed{"wildcard-in-topic", 2, []byte{0x30, 0x05, 0x00, 0x01, '#', 0x00, 'x'}},
		fuzzSeed{"reserved-type-0", 1, []byte{0x00, 0x00}},
		fuzzSeed{"huge-length", 2, []byte{0x30, 0xff, 0xff, 0xff, 0x7f}},
		fuzzSeed{"subscribe-no-filters", 1, []byte{0x82, 0x02, 0x00, 0x01}},
		fuzzSeed{"alias-not-set", 2, []byte{0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x09}},
		fuzzSeed{"bad-property", 2, []byte{0x30, 0x07, 0x00, 0x01, 'a', 0x02, 0x7f, 0x00, 'x'}},
		fuzzSeed{"auth-packet", 2, []byte{0xf0, 0x00}},
	)
	return seeds
}
