package broker

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

// TestConnackPropertiesV5: CONNACK announces the broker's limits, assigns a
// client id to an empty one, and gives response information when asked.
func TestConnackPropertiesV5(t *testing.T) {
	_, addr := startServer(t, func(c *Config) {
		c.MaxKeepAlive = 20
		c.MaximumQoS = 1
		c.RetainAvailable = false
	}, Options{})
	c := dialRaw(t, addr, packet.V5)
	cp := rawConnect{clean: true, keepAlive: 60}.packet()
	cp.Props.RequestResponseInfo = 1
	cp.Props.Set(packet.PropRequestResponseInfo)
	ack := c.connect(cp)
	pr := ack.Props
	id := string(pr.AssignedClientID)
	switch {
	case ack.Reason != packet.Success:
		t.Fatalf("reason %#x", ack.Reason)
	case id == "":
		t.Error("no assigned client identifier")
	case !pr.Has(packet.PropReceiveMaximum) || pr.ReceiveMaximum != 256:
		t.Errorf("receive maximum %d", pr.ReceiveMaximum)
	case !pr.Has(packet.PropMaximumQoS) || pr.MaximumQoS != 1:
		t.Errorf("maximum QoS %v %d", pr.Has(packet.PropMaximumQoS), pr.MaximumQoS)
	case !pr.Has(packet.PropRetainAvailable) || pr.RetainAvailable != 0:
		t.Errorf("retain available")
	case !pr.Has(packet.PropServerKeepAlive) || pr.ServerKeepAlive != 20:
		t.Errorf("server keep alive %d", pr.ServerKeepAlive)
	case pr.WildcardSubAvailable != 1 || pr.SubscriptionIDAvailable != 1 || pr.SharedSubAvailable != 1:
		t.Errorf("availability flags %+v", pr)
	case !pr.Has(packet.PropMaximumPacketSize) || pr.MaximumPacketSize != 1<<20:
		t.Errorf("maximum packet size %d", pr.MaximumPacketSize)
	case string(pr.ResponseInfo) != "gatewayd/response/"+id+"/":
		t.Errorf("response information %q", pr.ResponseInfo)
	}
}

// TestConnectRefusals: unsupported protocol levels and bad client ids.
func TestConnectRefusals(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	// Protocol level 6 with name MQTT: 3.1.1 CONNACK 0x01, then close.
	c := dialRaw(t, addr, packet.V311)
	c.sendBytes([]byte{0x10, 10, 0, 4, 'M', 'Q', 'T', 'T', 6, 2, 0, 60, 0, 0})
	if ack, ok := c.next().(*packet.Connack); !ok || ack.Reason != packet.V3RefusedProtocolVersion {
		t.Fatalf("want CONNACK 0x01")
	}
	c.closed()
	// 3.1.1 empty client id without clean session: 0x02.
	c = dialRaw(t, addr, packet.V311)
	c.sendBytes([]byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0, 0, 10, 0, 0})
	if ack, ok := c.next().(*packet.Connack); !ok || ack.Reason != packet.V3RefusedIdentifierRejected {
		t.Fatalf("want CONNACK 0x02")
	}
	c.closed()
	// 3.1.1 empty id with clean session is accepted.
	c = dialRaw(t, addr, packet.V311)
	if ack := c.connect(&packet.Connect{KeepAlive: 10, CleanStart: true}); ack.Reason != 0 {
		t.Fatalf("reason %#x", ack.Reason)
	}
	// First packet not CONNECT: closed without an answer.
	c = dialRaw(t, addr, packet.V311)
	c.sendBytes([]byte{0xC0, 0})
	if seen := c.closed(); len(seen) != 0 {
		t.Fatalf("got %v", seen)
	}
}

// TestSecondConnectIsProtocolError: v5 gets DISCONNECT 0x82.
func TestSecondConnectIsProtocolError(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V5)
	c.mustConnect("twice", true)
	c.sendConnect(rawConnect{id: "twice", clean: true}.packet())
	if d, ok := c.next().(*packet.Disconnect); !ok || d.Reason != packet.ProtocolError {
		t.Fatal("want DISCONNECT 0x82")
	}
	c.closed()
}

// TestMalformedPacketV5: a malformed packet gets DISCONNECT with the codec's
// reason and closes only that connection.
func TestMalformedPacketV5(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	other := dialRaw(t, addr, packet.V311)
	other.mustConnect("bystander", true)
	other.subscribe(1, "t", 0)

	c := dialRaw(t, addr, packet.V5)
	c.mustConnect("bad", true)
	// SUBSCRIBE with flags 0000 instead of 0010.
	c.sendBytes([]byte{0x80, 6, 0, 1, 0, 0, 't', 0})
	d, ok := c.next().(*packet.Disconnect)
	if !ok || d.Reason != packet.MalformedPacket || len(d.Props.ReasonString) == 0 {
		t.Fatalf("want DISCONNECT 0x81 with a reason string")
	}
	c.closed()

	// A 3.1.1 client is just closed.
	c3 := dialRaw(t, addr, packet.V311)
	c3.mustConnect("bad3", true)
	c3.sendBytes([]byte{0x30, 2, 0, 5}) // topic length beyond the packet
	if seen := c3.closed(); len(seen) != 0 {
		t.Fatalf("got %v", seen)
	}

	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	pub.publish("t", 0, false, 0, "still fine")
	if p := other.nextPublish(); string(p.Payload) != "still fine" {
		t.Fatalf("%q", p.Payload)
	}
	if s.Stats().ProtocolErrors < 2 {
		t.Fatalf("protocol errors %d", s.Stats().ProtocolErrors)
	}
}

// TestTopicAliases: inbound aliases resolve to the topic; an alias above the
// maximum is DISCONNECT 0x94; outbound aliases are assigned up to the
// client's maximum.
func TestTopicAliases(t *testing.T) {
	_, addr := startServer(t, func(c *Config) { c.TopicAliasMaximum = 2 }, Options{})
	sub := dialRaw(t, addr, packet.V5)
	cp := rawConnect{id: "sub", clean: true}.packet()
	cp.Props.TopicAliasMaximum = 1
	cp.Props.Set(packet.PropTopicAliasMaximum)
	sub.connect(cp)
	sub.subscribe(1, "a/#", 0)

	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	p := &packet.Publish{Topic: []byte("a/one"), Payload: []byte("1")}
	p.Props.TopicAlias = 1
	p.Props.Set(packet.PropTopicAlias)
	pub.send(p)
	p.Topic, p.Payload = nil, []byte("2")
	pub.send(p)
	pub.publish("a/two", 0, false, 0, "3")

	got := sub.nextPublish()
	if string(got.Topic) != "a/one" || got.Props.TopicAlias != 1 {
		t.Fatalf("first: topic %q alias %d, want a/one with alias 1", got.Topic, got.Props.TopicAlias)
	}
	got = sub.nextPublish()
	if len(got.Topic) != 0 || got.Props.TopicAlias != 1 || string(got.Payload) != "2" {
		t.Fatalf("second: topic %q alias %d, want alias only", got.Topic, got.Props.TopicAlias)
	}
	got = sub.nextPublish()
	if string(got.Topic) != "a/two" || got.Props.Has(packet.PropTopicAlias) {
		t.Fatalf("third: topic %q alias %d, want no alias (client maximum is 1)", got.Topic, got.Props.TopicAlias)
	}

	p.Props.TopicAlias = 3
	p.Topic = []byte("a/x")
	pub.send(p)
	if d, ok := pub.next().(*packet.Disconnect); !ok || d.Reason != packet.TopicAliasInvalid {
		t.Fatal("want DISCONNECT 0x94")
	}
}

// TestNoLocalAndRetainAsPublished: no local skips the publisher's own
// messages; retain as published keeps the retain flag.
func TestNoLocalAndRetainAsPublished(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V5)
	c.mustConnect("me", true)
	c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: []byte("own/#"), NoLocal: true},
		{Filter: []byte("rap/#"), RetainAsPublished: true},
	}})
	c.suback(1)
	c.publish("own/x", 0, false, 0, "mine")
	c.publish("rap/x", 0, true, 0, "flagged")
	p := c.nextPublish()
	if string(p.Payload) != "flagged" || !p.Retain {
		t.Fatalf("got %q retain %v, want only the retain-as-published message with retain set", p.Payload, p.Retain)
	}
}

// TestOverlappingSubscriptionsDeliverOnce: a client with several matching
// filters gets one copy at the highest QoS with every subscription id.
func TestOverlappingSubscriptionsDeliverOnce(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V5)
	c.mustConnect("me", true)
	for i, f := range []string{"a/#", "a/+", "a/b"} {
		s := &packet.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packet.Subscription{{Filter: []byte(f), QoS: byte(i % 2)}}}
		s.Props.SubscriptionIDs = []uint32{uint32(i + 1)}
		c.send(s)
		c.suback(uint16(i + 1))
	}
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	pub.publish("a/b", 1, false, 1, "once")
	pub.publish("a/c", 0, false, 0, "marker")
	p := c.nextPublish()
	ids := slices.Sorted(slices.Values(p.Props.SubscriptionIDs))
	if p.QoS != 1 || !slices.Equal(ids, []uint32{1, 2, 3}) {
		t.Fatalf("QoS %d ids %v, want QoS 1 and ids 1 2 3", p.QoS, ids)
	}
	c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	if p := c.nextPublish(); string(p.Payload) != "marker" {
		t.Fatalf("second message %q: a duplicate was delivered", p.Payload)
	}
}

// TestInboundQoS2ExactlyOnce: a PUBLISH repeated with the id of one awaiting
// PUBREL is not routed again; PUBREL for an unknown id gets PUBCOMP 0x92.
func TestInboundQoS2ExactlyOnce(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	sub := dialRaw(t, addr, packet.V5)
	sub.mustConnect("sub", true)
	sub.subscribe(1, "t", 0)
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	pub.publish("t", 2, false, 5, "once")
	pub.nextAck(packet.PUBREC)
	pub.send(&packet.Publish{Topic: []byte("t"), QoS: 2, PacketID: 5, Dup: true, Payload: []byte("once")})
	pub.nextAck(packet.PUBREC)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 5})
	pub.nextAck(packet.PUBCOMP)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 99})
	if a := pub.nextAck(packet.PUBCOMP); a.Reason != packet.PacketIdentifierNotFound {
		t.Fatalf("PUBCOMP reason %#x, want 0x92", a.Reason)
	}
	pub.publish("t", 0, false, 0, "marker")
	if p := sub.nextPublish(); string(p.Payload) != "once" {
		t.Fatal(string(p.Payload))
	}
	if p := sub.nextPublish(); string(p.Payload) != "marker" {
		t.Fatalf("%q: QoS 2 message routed twice", p.Payload)
	}
}

// TestReceiveMaximumExceeded: more unacknowledged QoS 1/2 messages than the
// broker's Receive Maximum is DISCONNECT 0x93.
func TestReceiveMaximumExceeded(t *testing.T) {
	_, addr := startServer(t, func(c *Config) { c.ReceiveMaximum = 2 }, Options{})
	c := dialRaw(t, addr, packet.V5)
	c.mustConnect("flood", true)
	for i := uint16(1); i <= 3; i++ {
		c.publish("t", 2, false, i, "x")
	}
	c.nextAck(packet.PUBREC)
	c.nextAck(packet.PUBREC)
	if d, ok := c.next().(*packet.Disconnect); !ok || d.Reason != packet.ReceiveMaximumExceeded {
		t.Fatal("want DISCONNECT 0x93")
	}
}

// TestMaximumPacketSizeOutbound: a message larger than the client's Maximum
// Packet Size is dropped for that client and counted.
func TestMaximumPacketSizeOutbound(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V5)
	cp := rawConnect{id: "small", clean: true}.packet()
	cp.Props.MaximumPacketSize = 64
	cp.Props.Set(packet.PropMaximumPacketSize)
	c.connect(cp)
	c.subscribe(1, "t", 1)
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	pub.publish("t", 1, false, 1, strings.Repeat("x", 100))
	pub.nextAck(packet.PUBACK)
	pub.publish("t", 0, false, 0, "small")
	if p := c.nextPublish(); string(p.Payload) != "small" {
		t.Fatalf("%q", p.Payload)
	}
	if st := s.Stats(); st.DroppedTooLarge != 1 {
		t.Fatalf("dropped too large %d", st.DroppedTooLarge)
	}
}

// TestMessageExpiry: the remaining interval is sent on delivery; an expired
// retained message is not delivered.
func TestMessageExpiry(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	p := &packet.Publish{Topic: []byte("e/long"), Retain: true, Payload: []byte("l")}
	p.Props.MessageExpiry = 3600
	p.Props.Set(packet.PropMessageExpiry)
	pub.send(p)
	sub := dialRaw(t, addr, packet.V5)
	sub.mustConnect("sub", true)
	sub.subscribe(1, "e/#", 0)
	got := sub.nextPublish()
	if !got.Props.Has(packet.PropMessageExpiry) || got.Props.MessageExpiry == 0 || got.Props.MessageExpiry > 3600 {
		t.Fatalf("expiry %d", got.Props.MessageExpiry)
	}
}

// TestPropertiesPassThrough: user properties, content type, response topic,
// correlation data and payload format reach a v5 subscriber unchanged.
func TestPropertiesPassThrough(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	sub := dialRaw(t, addr, packet.V5)
	sub.mustConnect("sub", true)
	sub.subscribe(1, "p", 1)
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	p := &packet.Publish{Topic: []byte("p"), QoS: 1, PacketID: 1, Payload: []byte("{}")}
	p.Props.ContentType = []byte("application/json")
	p.Props.ResponseTopic = []byte("reply/here")
	p.Props.CorrelationData = []byte{1, 2, 3}
	p.Props.PayloadFormat = 1
	p.Props.Set(packet.PropPayloadFormat)
	p.Props.User = []packet.UserProperty{{Key: []byte("k"), Value: []byte("v")}, {Key: []byte("k"), Value: []byte("w")}}
	pub.send(p)
	pub.nextAck(packet.PUBACK)
	got := sub.nextPublish()
	pr := got.Props
	if string(pr.ContentType) != "application/json" || string(pr.ResponseTopic) != "reply/here" ||
		string(pr.CorrelationData) != "\x01\x02\x03" || pr.PayloadFormat != 1 || len(pr.User) != 2 ||
		string(pr.User[1].Value) != "w" {
		t.Fatalf("properties %+v", pr)
	}
}

// TestSharedSubscription: each message goes to one member of the group; no
// retained messages on a shared subscribe; a member's unacknowledged
// messages move to another member when it drops.
func TestSharedSubscription(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	pub.publish("s/r", 1, true, 9, "retained")
	pub.nextAck(packet.PUBACK) // stored before anyone subscribes

	a := dialRaw(t, addr, packet.V5)
	a.mustConnect("a", true)
	a.subscribe(1, "$share/g/s/#", 1)
	b := dialRaw(t, addr, packet.V5)
	b.mustConnect("b", true)
	b.subscribe(1, "$share/g/s/#", 1)

	for i := uint16(1); i <= 4; i++ {
		pub.publish("s/x", 1, false, i, "m")
		pub.nextAck(packet.PUBACK)
	}
	// Round robin over connected members: two each. a acknowledges; b
	// does not and drops, so its two go to a.
	for range 2 {
		p := a.nextPublish()
		if p.Retain {
			t.Fatal("retained message sent on a shared subscribe")
		}
		a.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	b.nextPublish()
	b.nextPublish()
	b.nc.Close()
	for range 2 {
		p := a.nextPublish()
		a.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
}

// TestAuthAndACL: the Authenticator refuses with its reason (mapped for
// 3.1.1) and the Authorizer is checked on subscribe, publish and delivery.
func TestAuthAndACL(t *testing.T) {
	_, addr := startServer(t, nil, Options{Auth: userAuth{}, ACL: prefixACL{}})
	c := dialRaw(t, addr, packet.V5)
	if ack := c.connect(rawConnect{id: "x", clean: true, user: "mallory"}.packet()); ack.Reason != packet.BadUserNameOrPassword {
		t.Fatalf("v5 reason %#x", ack.Reason)
	}
	c3 := dialRaw(t, addr, packet.V311)
	if ack := c3.connect(rawConnect{id: "x", clean: true, user: "mallory"}.packet()); ack.Reason != packet.V3RefusedBadUsernamePassword {
		t.Fatalf("v3 reason %#x", ack.Reason)
	}
	alice := dialRaw(t, addr, packet.V5)
	alice.connect(rawConnect{id: "a", clean: true, user: "alice"}.packet())
	alice.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: []byte("alice/#")}, {Filter: []byte("bob/#")}, {Filter: []byte("#")},
	}})
	if r := alice.suback(1); !slices.Equal(r, []packet.ReasonCode{0, packet.NotAuthorized, 0}) {
		t.Fatalf("SUBACK %v", r)
	}
	alice.publish("bob/x", 1, false, 1, "no")
	if a := alice.nextAck(packet.PUBACK); a.Reason != packet.NotAuthorized {
		t.Fatalf("PUBACK %#x", a.Reason)
	}
	bob := dialRaw(t, addr, packet.V5)
	bob.connect(rawConnect{id: "b", clean: true, user: "bob"}.packet())
	bob.publish("bob/secret", 0, false, 0, "hidden") // alice's "#" must not see it
	alice.publish("alice/x", 0, false, 0, "mine")
	if p := alice.nextPublish(); string(p.Payload) != "mine" {
		t.Fatalf("alice read %q on %q", p.Payload, p.Topic)
	}
}

type userAuth struct{}

func (userAuth) Authenticate(_ context.Context, ci *ConnectInfo) packet.ReasonCode {
	if ci.Username == "mallory" {
		return packet.BadUserNameOrPassword
	}
	return packet.Success
}

// prefixACL lets a user publish, subscribe to and read only topics under
// "<user>/", except that subscribing to "#" is allowed (reads are filtered).
type prefixACL struct{}

func (prefixACL) CanPublish(ci *ConnectInfo, topic string) bool {
	return strings.HasPrefix(topic, ci.Username+"/")
}
func (prefixACL) CanSubscribe(ci *ConnectInfo, filter string) bool {
	return filter == "#" || strings.HasPrefix(filter, ci.Username+"/")
}
func (prefixACL) CanRead(ci *ConnectInfo, topic string) bool {
	return strings.HasPrefix(topic, ci.Username+"/")
}

// TestServeConnOverPipe: an in-process client over net.Pipe.
func TestServeConnOverPipe(t *testing.T) {
	s, _ := startServer(t, nil, Options{})
	cl, sv := net.Pipe()
	done := make(chan struct{})
	go func() {
		s.ServeConn(sv, "pipe")
		close(done)
	}()
	c := newRaw(t, cl, packet.V311)
	c.mustConnect("piped", true)
	c.subscribe(1, "p", 0)
	c.publish("p", 0, false, 0, "loop")
	if p := c.nextPublish(); string(p.Payload) != "loop" {
		t.Fatal(string(p.Payload))
	}
	cl.Close()
	<-done
}

// TestRetainHandling: 0 sends retained messages on every subscribe, 1 only
// when the subscription is new, 2 never.
func TestRetainHandling(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	// QoS 1: the PUBACK says the retained message is stored before c
	// subscribes (a QoS 0 publish on another connection could still be in
	// flight and reach c live as well).
	pub.publish("rh/x", 1, true, 1, "kept")
	pub.nextAck(packet.PUBACK)
	c := dialRaw(t, addr, packet.V5)
	c.mustConnect("c", true)
	sub := func(id uint16, rh byte) {
		c.send(&packet.Subscribe{PacketID: id, Subscriptions: []packet.Subscription{{Filter: []byte("rh/#"), RetainHandling: rh}}})
		c.suback(id)
	}
	sub(1, 1) // new: sent
	if p := c.nextPublish(); !p.Retain {
		t.Fatal("retain handling 1, new subscription: retained message missing")
	}
	sub(2, 1) // existing: not sent
	sub(3, 2) // never
	sub(4, 0) // always
	if p := c.nextPublish(); !p.Retain || string(p.Payload) != "kept" {
		t.Fatalf("retain handling 0: %+v", p)
	}
	c.send(&packet.Pingreq{})
	if p := c.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v: a retained message was sent for retain handling 1 (existing) or 2", p.Type())
	}
}

// TestExpiredRetainedDropped: a retained message whose expiry passed is not
// delivered and leaves the retained store.
func TestExpiredRetainedDropped(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	p := &packet.Publish{Topic: []byte("e/short"), Retain: true, Payload: []byte("s")}
	p.Props.MessageExpiry = 1
	p.Props.Set(packet.PropMessageExpiry)
	pub.send(p)
	waitFor(t, "retained", func() bool { return s.Stats().Retained == 1 })
	time.Sleep(1100 * time.Millisecond) // let the one-second expiry pass
	sub := dialRaw(t, addr, packet.V5)
	sub.mustConnect("sub", true)
	sub.subscribe(1, "e/#", 0)
	sub.send(&packet.Pingreq{})
	if p := sub.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v, want no expired retained message", p.Type())
	}
	if st := s.Stats(); st.Retained != 0 || st.DroppedExpired != 1 {
		t.Fatalf("retained %d expired %d", st.Retained, st.DroppedExpired)
	}
}
