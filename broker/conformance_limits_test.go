package broker_test

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// max_connections: the connection beyond the limit is refused at CONNECT
// with v5 CONNACK 0x97 Quota exceeded / 3.1.1 0x03 Server unavailable and
// closed; the connected clients are not affected; it is counted.
func TestConformanceMaxConnectionsRefusesWithConnack(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaxConnections = 2 }, broker.Options{})
	first := dialV3(t, b, "first", 4, true)
	first.sub(t, "mc/t", 1)
	second := dialV3(t, b, "second", 4, true)
	before := b.Stats().ConnectionsOverLimit
	for _, tc := range []struct {
		level byte
		want  string
	}{{5, "0x97 Quota exceeded"}, {4, "0x03 Server unavailable"}, {3, "0x03 Server unavailable"}} {
		c := dialRaw(t, b, fmt.Sprintf("third connection, level %d", tc.level))
		c.send(connectPacket(connectSpec{Version: tc.level, ClientID: fmt.Sprintf("third-%d", tc.level), Clean: true, KeepAlive: 30}))
		got := c.waitClosed("connection beyond max_connections")
		ok := len(got) == 1 && got[0].Type == tCONNACK && len(got[0].Body) >= 2
		if ok && tc.level == 5 {
			ok = got[0].Body[1] == 0x97
		} else if ok {
			ok = string(got[0].Body) == "\x00\x03"
		}
		if !ok {
			t.Errorf("level %d connection beyond max_connections 2: got %s then close, want CONNACK %s then close", tc.level, describePackets(got), tc.want)
		}
	}
	if got := b.Stats().ConnectionsOverLimit - before; got != 3 {
		t.Errorf("Stats().ConnectionsOverLimit rose by %d, want 3", got)
	}
	second.pub(t, "mc/t", 1, false, "still fine")
	first.in.waitPayload(t, "still fine")
}

// max_subscriptions_per_client: a new filter beyond the limit is refused in
// SUBACK (v5 0x97 Quota exceeded, 3.1.1 0x80) while replacing an existing
// subscription still works, and nothing is delivered through the refused
// filter.
func TestConformanceMaxSubscriptionsPerClient(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaxSubscriptionsPerClient = 2 }, broker.Options{})
	c5, _ := dialV5(t, b, &paho.Connect{ClientID: "subs5", CleanStart: true})
	sa := c5.sub(t, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "ms/a", QoS: 1}, {Topic: "ms/b", QoS: 1}, {Topic: "ms/c", QoS: 1}}})
	if len(sa.Reasons) != 3 || sa.Reasons[0] != 1 || sa.Reasons[1] != 1 || sa.Reasons[2] != 0x97 {
		t.Errorf("v5 SUBSCRIBE to 3 filters with max_subscriptions_per_client 2: SUBACK % x, want [01 01 97]", sa.Reasons)
	}
	sa = c5.sub(t, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "ms/a", QoS: 0}}})
	if len(sa.Reasons) != 1 || sa.Reasons[0] != 0 {
		t.Errorf("v5 re-SUBSCRIBE to an existing filter at the limit: SUBACK % x, want [00] (a replacement is not a new subscription)", sa.Reasons)
	}
	c3 := dialV3(t, b, "subs3", 4, true)
	c3.sub(t, "ms/a", 1)
	c3.sub(t, "ms/b", 1)
	if g := c3.sub(t, "ms/c", 1); g != 0x80 {
		t.Errorf("3.1.1 third SUBSCRIBE with max_subscriptions_per_client 2: SUBACK %s, want 0x80", reasonHex(g))
	}
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "ms/c", 1, false, "through refused filter")
	pub.pub(t, "ms/b", 1, false, "fence")
	c5.in.waitPayload(t, "fence")
	c3.in.waitPayload(t, "fence")
	if len(c5.in.withPayload("through refused filter"))+len(c3.in.withPayload("through refused filter")) != 0 {
		t.Errorf("a message was delivered through a filter refused by max_subscriptions_per_client")
	}
}

// max_retained_messages: a retained PUBLISH to a new topic beyond the limit
// is refused (v5 PUBACK 0x97 Quota exceeded; 3.1.1 a plain PUBACK, as
// [MQTT-3.3.5-2] allows) and not routed; replacing and clearing the existing
// retained topic still work.
func TestConformanceMaxRetainedMessages(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaxRetainedMessages = 1 }, broker.Options{})
	watcher := dialV3(t, b, "watcher", 4, true)
	watcher.sub(t, "mr/#", 1)
	p3 := dialV3(t, b, "pub3", 4, true)
	p3.pub(t, "mr/one", 1, true, "first retained")

	p5, _ := dialV5(t, b, &paho.Connect{ClientID: "pub5", CleanStart: true})
	ctx, cancel := contextWithTimeout()
	defer cancel()
	pr, _ := p5.Publish(ctx, &paho.Publish{Topic: "mr/two", QoS: 1, Retain: true, Payload: []byte("second retained v5")})
	if pr == nil || pr.ReasonCode != 0x97 {
		t.Errorf("v5 retained PUBLISH to a new topic beyond max_retained_messages 1: PUBACK %+v, want reason 0x97 Quota exceeded", pr)
	}
	p3.pub(t, "mr/three", 1, true, "second retained v3")
	p3.pub(t, "mr/one", 1, true, "first retained, replaced")
	watcher.in.waitPayload(t, "first retained, replaced")
	for _, p := range []string{"second retained v5", "second retained v3"} {
		if got := watcher.in.withPayload(p); len(got) != 0 {
			t.Errorf("refused retained PUBLISH %q was routed to a subscriber", p)
		}
	}
	late := dialV3(t, b, "late", 4, true)
	late.sub(t, "mr/#", 1)
	late.in.waitPayload(t, "first retained, replaced")
	p3.pub(t, "mr/one", 1, true, "")
	p3.pub(t, "mr/three", 1, true, "now it fits")
	later := dialV3(t, b, "later", 4, true)
	later.sub(t, "mr/#", 1)
	if m := later.in.waitPayload(t, "now it fits"); m.Topic != "mr/three" {
		t.Errorf("after clearing mr/one, retaining mr/three: got %v", m)
	}
}
