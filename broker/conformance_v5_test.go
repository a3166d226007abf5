package broker_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// A message queued for an offline session is dropped once its Message Expiry
// Interval has passed [MQTT-3.3.2-5]; one delivered later carries the
// interval minus the time it waited [MQTT-3.3.2-6].
func TestConformanceMessageExpiryV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	connect := func() *v5Client {
		c, _ := dialV5(t, b, &paho.Connect{ClientID: "expiring", CleanStart: false,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: u32p(60)}})
		return c
	}
	c := connect()
	c.sub1(t, "exp/#", 1)
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("DISCONNECT: %v", err)
	}
	waitOffline(t, b, 1)

	pub, _ := dialV5(t, b, &paho.Connect{ClientID: "pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "exp/short", QoS: 1, Payload: []byte("short"), Properties: &paho.PublishProperties{MessageExpiry: u32p(1)}})
	pub.pub(t, &paho.Publish{Topic: "exp/long", QoS: 1, Payload: []byte("long"), Properties: &paho.PublishProperties{MessageExpiry: u32p(60)}})
	pub.pub(t, &paho.Publish{Topic: "exp/none", QoS: 1, Payload: []byte("none")})
	time.Sleep(2 * time.Second) // longer than the 1 s expiry

	before := b.Stats().DroppedExpired
	c = connect()
	long := c.in.waitPayload(t, "long")
	c.in.waitPayload(t, "none")
	pub.pub(t, &paho.Publish{Topic: "exp/fence", QoS: 1, Payload: []byte("fence")})
	c.in.waitPayload(t, "fence")
	if got := c.in.withPayload("short"); len(got) != 0 {
		t.Errorf("message with Message Expiry Interval 1 s delivered after waiting 2 s offline [MQTT-3.3.2-5]: %v", got)
	}
	if long.Props == nil || long.Props.MessageExpiry == nil {
		t.Errorf("queued message published with Message Expiry Interval 60 arrived without one [MQTT-3.3.2-6]")
	} else if *long.Props.MessageExpiry > 58 {
		t.Errorf("queued message waited 2 s but arrived with Message Expiry Interval %d, want at most 58 (60 minus the wait) [MQTT-3.3.2-6]", *long.Props.MessageExpiry)
	}
	if after := b.Stats().DroppedExpired; after <= before {
		t.Errorf("Stats().DroppedExpired stayed at %d after an expired message was dropped, want it counted", after)
	}
}

// Inbound topic aliases: a client sets an alias with the topic and then sends
// the alias with an empty topic (section 3.3.2.3.4); subscribers see the
// full topic both times.
func TestConformanceTopicAliasInboundV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	sub := dialV3(t, b, "sub", 4, true)
	sub.sub(t, "alias/#", 1)
	pub, ca := dialV5(t, b, &paho.Connect{ClientID: "aliaser", CleanStart: true})
	if ca.Properties == nil || ca.Properties.TopicAliasMaximum == nil || *ca.Properties.TopicAliasMaximum == 0 {
		t.Fatalf("CONNACK Topic Alias Maximum absent or 0; want inbound aliases allowed (topic_alias_maximum default)")
	}
	pub.pub(t, &paho.Publish{Topic: "alias/long/topic/name", QoS: 1, Payload: []byte("first"), Properties: &paho.PublishProperties{TopicAlias: u16p(1)}})
	pub.pub(t, &paho.Publish{Topic: "", QoS: 1, Payload: []byte("second"), Properties: &paho.PublishProperties{TopicAlias: u16p(1)}})
	pub.pub(t, &paho.Publish{Topic: "alias/other", QoS: 0, Payload: []byte("third"), Properties: &paho.PublishProperties{TopicAlias: u16p(1)}})
	pub.pub(t, &paho.Publish{Topic: "", QoS: 1, Payload: []byte("fourth"), Properties: &paho.PublishProperties{TopicAlias: u16p(1)}})
	for payload, topic := range map[string]string{"first": "alias/long/topic/name", "second": "alias/long/topic/name", "third": "alias/other", "fourth": "alias/other"} {
		if m := sub.in.waitPayload(t, payload); m.Topic != topic {
			t.Errorf("message %q published with topic alias 1 arrived on %q, want %q", payload, m.Topic, topic)
		}
	}
}

// Outbound topic aliases: to a client that allows them (Topic Alias Maximum
// in CONNECT) the broker may send the topic once with an alias and then the
// alias with an empty topic; never an alias above the client's maximum, and
// none to a client that did not allow them [MQTT-3.3.2-10], [MQTT-3.3.2-11].
func TestConformanceTopicAliasOutboundV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialRaw(t, b, "allows aliases")
	c.connect(connectSpec{Version: 5, ClientID: "alias-ok", Clean: true, KeepAlive: 30, Props: [][]byte{pU16(propTopicAliasMaximum, 5)}})
	c.subscribe(nil, rawSub{Filter: "oa/#", Options: 0})
	no := dialRaw(t, b, "no aliases")
	no.connect(connectSpec{Version: 5, ClientID: "alias-no", Clean: true, KeepAlive: 30})
	no.subscribe(nil, rawSub{Filter: "oa/#", Options: 0})

	pub := dialV3(t, b, "pub", 4, true)
	for _, p := range []string{"one", "two", "three"} {
		pub.pub(t, "oa/some/long/topic", 0, false, p)
	}
	var alias uint32
	for i, want := range []string{"one", "two", "three"} {
		p := c.expectPublish()
		if p.Payload != want {
			t.Fatalf("message %d: payload %q, want %q", i, p.Payload, want)
		}
		a, has := p.Props.num(propTopicAlias)
		if has && (a == 0 || a > 5) {
			t.Errorf("broker sent Topic Alias %d to a client with Topic Alias Maximum 5 [MQTT-3.3.2-10]", a)
		}
		switch i {
		case 0:
			if !has || p.Topic != "oa/some/long/topic" {
				t.Errorf("first message to a client allowing 5 aliases: topic %q alias %v; want the topic with an alias set", p.Topic, aliasOf(a, has))
			}
			alias = a
		default:
			if !has || a != alias || p.Topic != "" {
				t.Errorf("message %d on the same topic: topic %q alias %v; want an empty topic and alias %d", i+1, p.Topic, aliasOf(a, has), alias)
			}
		}
	}
	for i := range 3 {
		p := no.expectPublish()
		if a, has := p.Props.num(propTopicAlias); has || p.Topic != "oa/some/long/topic" {
			t.Errorf("message %d to a client that allows no aliases: topic %q alias %v; want the full topic and no alias [MQTT-3.3.2-11]", i+1, p.Topic, aliasOf(a, has))
		}
	}
}

func aliasOf(a uint32, has bool) any {
	if !has {
		return "none"
	}
	return a
}

// A client's Maximum Packet Size is never exceeded: a larger message is
// dropped for that client, as if sent [MQTT-3.1.2-24], [MQTT-3.1.2-25], and
// the drop is counted; smaller ones still arrive.
func TestConformanceMaximumPacketSizeOutboundV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	small, _ := dialV5(t, b, &paho.Connect{ClientID: "small", CleanStart: true,
		Properties: &paho.ConnectProperties{MaximumPacketSize: u32p(128)}})
	small.sub1(t, "mps/#", 1)
	big, _ := dialV5(t, b, &paho.Connect{ClientID: "big", CleanStart: true})
	big.sub1(t, "mps/#", 1)

	before := b.Stats().DroppedTooLarge
	pub := dialV3(t, b, "pub", 4, true)
	large := strings.Repeat("x", 1000)
	pub.pub(t, "mps/t", 1, false, large)
	pub.pub(t, "mps/t", 0, false, strings.Repeat("y", 500))
	pub.pub(t, "mps/t", 1, false, "small")
	small.in.waitPayload(t, "small")
	big.in.waitPayload(t, "small")
	if len(big.in.withPayload(large)) != 1 {
		t.Errorf("client without a Maximum Packet Size did not get the 1000-byte message")
	}
	for _, m := range small.in.all() {
		if len(m.Payload) > 100 {
			t.Errorf("client with Maximum Packet Size 128 received a %d-byte payload [MQTT-3.1.2-24]", len(m.Payload))
		}
	}
	if after := b.Stats().DroppedTooLarge; after < before+2 {
		t.Errorf("Stats().DroppedTooLarge went from %d to %d after two messages were too large for a client, want +2", before, after)
	}
}

// Request Response Information: when asked, CONNACK carries Response
// Information; when not asked, it must not [MQTT-3.1.2-28].
func TestConformanceResponseInformationV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	_, ca := dialV5(t, b, &paho.Connect{ClientID: "asks", CleanStart: true, Properties: &paho.ConnectProperties{RequestResponseInfo: true}})
	if ca.Properties == nil || ca.Properties.ResponseInfo == "" {
		t.Errorf("CONNECT with Request Response Information 1: CONNACK has no Response Information")
	}
	_, ca = dialV5(t, b, &paho.Connect{ClientID: "does-not-ask", CleanStart: true})
	if ca.Properties != nil && ca.Properties.ResponseInfo != "" {
		t.Errorf("CONNECT without Request Response Information: CONNACK has Response Information %q, want none [MQTT-3.1.2-28]", ca.Properties.ResponseInfo)
	}
}

// Application properties reach subscribers unchanged: User Properties in
// order [MQTT-3.3.2-17], [MQTT-3.3.2-18], Payload Format Indicator
// [MQTT-3.3.2-4], Content Type [MQTT-3.3.2-20], Response Topic
// [MQTT-3.3.2-15] and Correlation Data [MQTT-3.3.2-16]; a request/response
// exchange works with them.
func TestConformancePublishPropertiesPassedThroughV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	responder, _ := dialV5(t, b, &paho.Connect{ClientID: "responder", CleanStart: true})
	responder.sub1(t, "req/+", 1)
	requester, _ := dialV5(t, b, &paho.Connect{ClientID: "requester", CleanStart: true})
	requester.sub1(t, "resp/requester", 1)

	user := paho.UserProperties{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}, {Key: "b", Value: "3"}}
	requester.pub(t, &paho.Publish{Topic: "req/temp", QoS: 1, Payload: []byte(`{"q":"temp"}`), Properties: &paho.PublishProperties{
		PayloadFormat:   bytep(1),
		ContentType:     "application/json",
		ResponseTopic:   "resp/requester",
		CorrelationData: []byte{0x00, 0x01, 0xfe},
		User:            user,
	}})
	req := responder.in.waitPayload(t, `{"q":"temp"}`)
	p := req.Props
	if p == nil {
		t.Fatalf("request arrived without properties")
	}
	if p.PayloadFormat == nil || *p.PayloadFormat != 1 {
		t.Errorf("Payload Format Indicator %v, want 1", p.PayloadFormat)
	}
	if p.ContentType != "application/json" {
		t.Errorf("Content Type %q, want application/json", p.ContentType)
	}
	if p.ResponseTopic != "resp/requester" {
		t.Errorf("Response Topic %q, want resp/requester", p.ResponseTopic)
	}
	if string(p.CorrelationData) != "\x00\x01\xfe" {
		t.Errorf("Correlation Data % x, want 00 01 fe", p.CorrelationData)
	}
	if !slices.Equal(p.User, user) {
		t.Errorf("User Properties %v, want %v (same order, duplicates kept)", p.User, user)
	}

	responder.pub(t, &paho.Publish{Topic: p.ResponseTopic, QoS: 1, Payload: []byte("21.5"), Properties: &paho.PublishProperties{CorrelationData: p.CorrelationData}})
	resp := requester.in.waitPayload(t, "21.5")
	if resp.Props == nil || string(resp.Props.CorrelationData) != "\x00\x01\xfe" {
		t.Errorf("response lost its Correlation Data")
	}

	// The same properties reach a 3.1.1 subscriber as a plain message.
	old := dialV3(t, b, "old", 4, true)
	old.sub(t, "req/+", 1)
	requester.pub(t, &paho.Publish{Topic: "req/x", QoS: 1, Payload: []byte("to old"), Properties: &paho.PublishProperties{User: user, ContentType: "text/plain"}})
	old.in.waitPayload(t, "to old")
}

// Topic alias mappings exist only within one network connection
// [MQTT-3.3.2-7]: after a reconnect (same persistent session) the broker
// sends the full topic again before using an alias, and an inbound alias set
// on the previous connection is unknown.
func TestConformanceTopicAliasesDoNotSurviveReconnectV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	spec := connectSpec{Version: 5, ClientID: "alias-session", Clean: false, KeepAlive: 30,
		Props: [][]byte{pU32(propSessionExpiry, 60), pU16(propTopicAliasMaximum, 5)}}
	c := dialRaw(t, b, "first connection")
	c.connect(spec)
	c.subscribe(nil, rawSub{Filter: "ar/#", Options: 1})
	c.send(v5pub("ar/in", 0, 0, "sets alias 1", pU16(propTopicAlias, 1)))
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "ar/out", 1, false, "one")
	for seen := 0; seen < 2; {
		p := c.expectPublish()
		c.send(ackPacket(true, tPUBACK, p.ID))
		seen++
	}
	c.close()

	pub.pub(t, "ar/out", 1, false, "while offline")
	c = dialRaw(t, b, "second connection")
	c.connect(spec)
	p := c.expectPublish()
	if p.Topic != "ar/out" {
		a, has := p.Props.num(propTopicAlias)
		t.Errorf("first PUBLISH on a new connection has topic %q and alias %v; want the full topic ar/out [MQTT-3.3.2-7]", p.Topic, aliasOf(a, has))
	}
	c.send(ackPacket(true, tPUBACK, p.ID))
	c.send(v5pub("", 0, 0, "alias from the old connection", pU16(propTopicAlias, 1)))
	got := c.waitClosed("PUBLISH using an alias set on a previous connection")
	if len(got) == 0 || got[len(got)-1].Type != tDISCONNECT || !containsByte([]byte{0x82, 0x94}, got[len(got)-1].disconnectReason()) {
		t.Errorf("PUBLISH with an empty topic and an alias only set on the previous connection: got %s; want DISCONNECT 0x82 Protocol Error (or 0x94)", describePackets(got))
	}
}

// A retained message expires like any other: after its Message Expiry
// Interval a new subscriber does not get it [MQTT-3.3.2-5]; before, it gets
// the interval minus the time it was retained [MQTT-3.3.2-6].
func TestConformanceRetainedMessageExpiryV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	pub, _ := dialV5(t, b, &paho.Connect{ClientID: "pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "rx/short", QoS: 1, Retain: true, Payload: []byte("short"), Properties: &paho.PublishProperties{MessageExpiry: u32p(1)}})
	pub.pub(t, &paho.Publish{Topic: "rx/long", QoS: 1, Retain: true, Payload: []byte("long"), Properties: &paho.PublishProperties{MessageExpiry: u32p(60)}})
	time.Sleep(2 * time.Second)
	sub, _ := dialV5(t, b, &paho.Connect{ClientID: "sub", CleanStart: true})
	sub.sub1(t, "rx/+", 1)
	long := sub.in.waitPayload(t, "long")
	pub.pub(t, &paho.Publish{Topic: "rx/fence", QoS: 1, Payload: []byte("fence")})
	sub.in.waitPayload(t, "fence")
	if got := sub.in.withPayload("short"); len(got) != 0 {
		t.Errorf("retained message with Message Expiry Interval 1 s sent to a subscriber 2 s later [MQTT-3.3.2-5]")
	}
	if long.Props == nil || long.Props.MessageExpiry == nil || *long.Props.MessageExpiry > 58 {
		t.Errorf("retained message (expiry 60 s) sent 2 s later with Message Expiry Interval %v, want at most 58 [MQTT-3.3.2-6]", expiryOf(long))
	}
}

func expiryOf(m message) any {
	if m.Props == nil || m.Props.MessageExpiry == nil {
		return "absent"
	}
	return *m.Props.MessageExpiry
}

// max_packet_size is a bound on the whole packet: a PUBLISH of exactly that
// size is accepted, one byte more is refused with DISCONNECT 0x95
// (section 3.2.2.3.6).
func TestConformanceMaximumPacketSizeBoundaryInbound(t *testing.T) {
	const max = 1024
	b := startBroker(t, func(c *broker.Config) { c.MaxPacketSize = max }, broker.Options{})
	sub := dialV3(t, b, "sub", 4, true)
	sub.sub(t, "mb/t", 0)
	c := dialRaw(t, b, "publisher at the limit")
	c.connect(connectSpec{Version: 5, ClientID: "limit", Clean: true, KeepAlive: 30})
	sized := func(n int) []byte {
		p := v5pub("mb/t", 0, 0, "")
		return v5pub("mb/t", 0, 0, strings.Repeat("z", n-len(p)-1)) // remaining length grows to 2 bytes
	}
	exact := sized(max)
	if len(exact) != max {
		t.Fatalf("test bug: built a %d-byte packet, want %d", len(exact), max)
	}
	c.send(exact)
	sub.in.waitFor(t, "the packet of exactly max_packet_size", func(m message) bool { return len(m.Payload) > 900 })
	over := sized(max + 1)
	c.send(over)
	got := c.waitClosed("PUBLISH one byte over max_packet_size")
	if len(got) != 1 || got[0].Type != tDISCONNECT || got[0].disconnectReason() != 0x95 {
		t.Errorf("PUBLISH of %d bytes with max_packet_size %d: got %s, want DISCONNECT 0x95 Packet too large", len(over), max, describePackets(got))
	}
}

// With Request Problem Information 0 the broker sends no Reason String or
// User Property except on PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
func TestConformanceRequestProblemInformationZeroV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{ACL: prefixACL{denyPublish: "secret/", denySubscribe: "secret/"}})
	c := dialRaw(t, b, "no problem information")
	c.connect(connectSpec{Version: 5, ClientID: "quiet", Clean: true, KeepAlive: 30, Props: [][]byte{pByte(0x17, 0)}})
	c.send(v5pub("secret/x", 1, 5, "denied"))
	ack := c.expect(tPUBACK)
	r := &reader{b: ack.Body}
	r.u16()
	if len(r.b) > 0 {
		reason := r.byte1()
		if reason != 0x87 {
			t.Errorf("PUBACK reason %s for a denied publish, want 0x87", reasonHex(reason))
		}
		if len(r.b) > 0 {
			if ps := r.props(); len(ps) > 0 {
				t.Errorf("PUBACK carries properties %+v although the client sent Request Problem Information 0 [MQTT-3.1.2-29]", ps)
			}
		}
	} else {
		t.Errorf("PUBACK for a denied publish has no reason code; want 0x87")
	}
	c.send(subscribePacket(true, 2, nil, rawSub{Filter: "secret/#", Options: 1}))
	sa := c.expect(tSUBACK)
	r = &reader{b: sa.Body}
	r.u16()
	if ps := r.props(); len(ps) > 0 {
		t.Errorf("SUBACK carries properties %+v although the client sent Request Problem Information 0 [MQTT-3.1.2-29]", ps)
	}
}

// Outbound QoS 2: PUBLISH, PUBREC from the client, PUBREL from the broker
// with the same id, PUBCOMP from the client; delivered once (section 4.3.3).
func TestConformanceQoS2OutboundFlowV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialRaw(t, b, "qos 2 subscriber")
	c.connect(connectSpec{Version: 5, ClientID: "q2sub", Clean: true, KeepAlive: 30})
	c.subscribe(nil, rawSub{Filter: "q2/t", Options: 2})
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "q2/t", 2, false, "exactly once")
	p := c.expectPublish()
	if p.QoS != 2 || p.ID == 0 || p.Dup {
		t.Fatalf("PUBLISH %+v, want QoS 2, non-zero id, DUP 0", p)
	}
	c.send(ackPacket(true, tPUBREC, p.ID))
	rel := c.expect(tPUBREL)
	if rel.Flags != 0x02 || rel.packetID() != p.ID {
		t.Errorf("PUBREL flags %x id %d, want flags 2 [MQTT-3.6.1-1] and id %d", rel.Flags, rel.packetID(), p.ID)
	}
	c.send(ackPacket(true, tPUBCOMP, p.ID))
	pub.pub(t, "q2/t", 0, false, "next")
	if n := c.expectPublish(); n.Payload != "next" {
		t.Errorf("after PUBCOMP got %q again, want the next message", n.Payload)
	}
}

// retain_available false: CONNACK says Retain Available 0 and a v5 PUBLISH
// with RETAIN 1 is answered with DISCONNECT 0x9A Retain not supported
// (section 3.2.2.3.5); nothing is retained.
func TestConformanceRetainNotAvailable(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.RetainAvailable = false }, broker.Options{})
	c := dialRaw(t, b, "publishes retained")
	ca := c.connect(connectSpec{Version: 5, ClientID: "retainer", Clean: true, KeepAlive: 30})
	if v, ok := ca.Props.num(0x25); !ok || v != 0 {
		t.Errorf("CONNACK Retain Available %v (present %v), want 0", v, ok)
	}
	c.send(publishPacket(true, pubSpec{Topic: "nr/t", QoS: 1, ID: 2, Retain: true, Payload: "keep me"}))
	got := c.waitClosed("PUBLISH with RETAIN 1 when Retain Available is 0")
	last := got[len(got)-1:]
	if len(last) == 0 || last[0].Type != tDISCONNECT || last[0].disconnectReason() != 0x9A {
		t.Errorf("got %s, want DISCONNECT 0x9A Retain not supported", describePackets(got))
	}
	sub := dialV3(t, b, "late", 4, true)
	sub.sub(t, "nr/+", 1)
	sub.sub(t, "nr-fence", 0)
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "nr-fence", 0, false, "fence")
	sub.in.waitPayload(t, "fence")
	if got := sub.in.withPayload("keep me"); len(got) != 0 {
		t.Errorf("a message was retained with retain_available false: %v", got)
	}
}

// maximum_qos 1: CONNACK carries Maximum QoS 1, subscriptions are granted at
// most QoS 1, and a v5 PUBLISH at QoS 2 gets DISCONNECT 0x9B QoS not
// supported (section 3.2.2.3.4).
func TestConformanceMaximumQoSOne(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaximumQoS = 1 }, broker.Options{})
	s5, ca := dialV5(t, b, &paho.Connect{ClientID: "mq5", CleanStart: true})
	if ca.Properties == nil || ca.Properties.MaximumQoS == nil || *ca.Properties.MaximumQoS != 1 {
		t.Errorf("CONNACK Maximum QoS absent or not 1 with maximum_qos 1")
	}
	sa := s5.sub(t, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "mq/t", QoS: 2}}})
	if len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		t.Errorf("v5 SUBSCRIBE QoS 2 with maximum_qos 1: SUBACK %v, want [1]", sa.Reasons)
	}
	s3 := dialV3(t, b, "mq3", 4, true)
	if g := s3.sub(t, "mq/t", 2); g != 1 {
		t.Errorf("3.1.1 SUBSCRIBE QoS 2 with maximum_qos 1: granted %d, want 1", g)
	}
	c := dialRaw(t, b, "qos 2 publisher")
	c.connect(connectSpec{Version: 5, ClientID: "mq-pub", Clean: true, KeepAlive: 30})
	c.send(v5pub("mq/t", 2, 1, "too high"))
	got := c.waitClosed("v5 PUBLISH QoS 2 with Maximum QoS 1")
	if len(got) != 1 || got[0].Type != tDISCONNECT || got[0].disconnectReason() != 0x9B {
		t.Errorf("got %s, want DISCONNECT 0x9B QoS not supported", describePackets(got))
	}
}
