package broker_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// topicsOf returns the sorted, de-duplicated topics in msgs, without skip.
func topicsOf(msgs []message, skip string) []string {
	seen := map[string]bool{}
	for _, m := range msgs {
		if m.Topic != skip {
			seen[m.Topic] = true
		}
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// '+' matches exactly one level and '#' any number of levels including the
// parent (section 4.7.1); a filter receives exactly the topics it matches.
func TestConformanceWildcardMatching(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	published := []string{
		"sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis", "sport", "sport/",
		"/finance", "finance", "a/b/c", "a//c", "a/b/d",
	}
	cases := []struct {
		filter string
		want   []string
	}{
		{"sport/tennis/+", []string{"sport/tennis/player1"}},
		{"sport/#", []string{"sport", "sport/", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking"}},
		{"sport/+", []string{"sport/", "sport/tennis"}},
		{"+/+", []string{"/finance", "sport/", "sport/tennis"}},
		{"/+", []string{"/finance"}},
		{"+", []string{"finance", "sport"}},
		{"a/+/c", []string{"a//c", "a/b/c"}},
		{"+/tennis/#", []string{"sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking"}},
		{"#", append(slices.Clone(published), "fence")},
	}
	subs := make([]*v3Client, len(cases))
	for i, tc := range cases {
		subs[i] = dialV3(t, b, fmt.Sprintf("wild-%d", i), 4, true)
		subs[i].sub(t, tc.filter, 1)
		subs[i].sub(t, "fence", 1)
	}
	pub := dialV3(t, b, "wild-pub", 4, true)
	for _, topic := range published {
		pub.pub(t, topic, 1, false, topic)
	}
	pub.pub(t, "fence", 1, false, "fence")
	for i, tc := range cases {
		subs[i].in.waitPayload(t, "fence")
		want := slices.Clone(tc.want)
		sort.Strings(want)
		want = slices.DeleteFunc(want, func(s string) bool { return s == "fence" })
		if got := topicsOf(subs[i].in.all(), "fence"); !slices.Equal(got, want) {
			t.Errorf("filter %q received topics %q, want %q", tc.filter, got, want)
		}
	}
}

// Topics starting with '$' are not matched by filters starting with a
// wildcard [MQTT-4.7.2-1]: '#' and '+/...' never see $SYS/..., '$SYS/#' does.
func TestConformanceSysTopicsNotMatchedByLeadingWildcards(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.SysInterval = 200 * time.Millisecond }, broker.Options{Version: "conformance"})
	hash := dialV3(t, b, "hash", 4, true)
	hash.sub(t, "#", 0)
	plus := dialV3(t, b, "plus", 4, true)
	plus.sub(t, "+/broker/#", 0)
	plus.sub(t, "+/+/version", 0)
	plus.sub(t, "fence", 0)
	sys := dialV3(t, b, "sys", 4, true)
	sys.sub(t, "$SYS/#", 0)

	sys.in.waitFor(t, "$SYS/broker/version on $SYS/#", func(m message) bool { return m.Topic == "$SYS/broker/version" })
	time.Sleep(3 * 200 * time.Millisecond) // a few more $SYS rounds
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "fence", 1, false, "fence")
	hash.in.waitPayload(t, "fence")
	plus.in.waitPayload(t, "fence")
	for name, c := range map[string]*v3Client{"'#'": hash, "'+/broker/#' and '+/+/version'": plus} {
		for _, m := range c.in.all() {
			if strings.HasPrefix(m.Topic, "$") {
				t.Errorf("client subscribed to %s received %s; topics starting with $ must not match filters starting with a wildcard [MQTT-4.7.2-1]", name, m.Topic)
			}
		}
	}
}

// A message is delivered at the lower of its published QoS and the QoS the
// subscription granted [MQTT-3.8.4-8] (3.1.1: section 3.8.4).
func TestConformanceSubscriptionQoSDowngrade(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	type pair struct{ pubQoS, subQoS byte }
	pairs := []pair{{2, 1}, {2, 0}, {1, 0}, {2, 2}, {1, 2}, {0, 2}}

	t.Run("3.1.1", func(t *testing.T) {
		sub := dialV3(t, b, "dg3-sub", 4, true)
		pub := dialV3(t, b, "dg3-pub", 4, true)
		for _, p := range pairs {
			sub.sub(t, fmt.Sprintf("dg3/%d/%d", p.pubQoS, p.subQoS), p.subQoS)
		}
		for _, p := range pairs {
			pub.pub(t, fmt.Sprintf("dg3/%d/%d", p.pubQoS, p.subQoS), p.pubQoS, false, "x")
		}
		for _, p := range pairs {
			topic := fmt.Sprintf("dg3/%d/%d", p.pubQoS, p.subQoS)
			m := sub.in.waitFor(t, topic, func(m message) bool { return m.Topic == topic })
			if want := min(p.pubQoS, p.subQoS); m.QoS != want {
				t.Errorf("published QoS %d, subscribed QoS %d: received QoS %d, want %d", p.pubQoS, p.subQoS, m.QoS, want)
			}
		}
	})
	t.Run("5.0", func(t *testing.T) {
		sub, _ := dialV5(t, b, &paho.Connect{ClientID: "dg5-sub", CleanStart: true})
		pub, _ := dialV5(t, b, &paho.Connect{ClientID: "dg5-pub", CleanStart: true})
		for _, p := range pairs {
			sub.sub1(t, fmt.Sprintf("dg5/%d/%d", p.pubQoS, p.subQoS), p.subQoS)
		}
		for _, p := range pairs {
			pub.pub(t, &paho.Publish{Topic: fmt.Sprintf("dg5/%d/%d", p.pubQoS, p.subQoS), QoS: p.pubQoS, Payload: []byte("x")})
		}
		for _, p := range pairs {
			topic := fmt.Sprintf("dg5/%d/%d", p.pubQoS, p.subQoS)
			m := sub.in.waitFor(t, topic, func(m message) bool { return m.Topic == topic })
			if want := min(p.pubQoS, p.subQoS); m.QoS != want {
				t.Errorf("published QoS %d, subscribed QoS %d: received QoS %d, want %d", p.pubQoS, p.subQoS, m.QoS, want)
			}
		}
	})
}

// v5 No Local: a client does not receive its own messages through a
// subscription with No Local set [MQTT-3.8.3-3]; others still do.
func TestConformanceNoLocalV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	self, _ := dialV5(t, b, &paho.Connect{ClientID: "nolocal", CleanStart: true})
	self.sub(t, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "nl/t", QoS: 1, NoLocal: true}}})
	other, _ := dialV5(t, b, &paho.Connect{ClientID: "other", CleanStart: true})
	other.sub1(t, "nl/t", 1)

	self.pub(t, &paho.Publish{Topic: "nl/t", QoS: 1, Payload: []byte("own")})
	other.pub(t, &paho.Publish{Topic: "nl/t", QoS: 1, Payload: []byte("from other")})
	self.in.waitPayload(t, "from other")
	other.in.waitPayload(t, "own")
	if got := self.in.withPayload("own"); len(got) != 0 {
		t.Errorf("No Local subscriber received its own message %v [MQTT-3.8.3-3]", got)
	}
}

// Retain As Published: with it set, a forwarded message keeps the RETAIN flag
// it was published with [MQTT-3.3.1-13]; without it, and in 3.1.1, the flag
// is cleared on messages forwarded to existing subscriptions [MQTT-3.3.1-12];
// a retained message sent because of a new subscription has RETAIN 1.
func TestConformanceRetainAsPublished(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	rap, _ := dialV5(t, b, &paho.Connect{ClientID: "rap", CleanStart: true})
	rap.sub(t, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "rap/t", QoS: 1, RetainAsPublished: true}}})
	plain, _ := dialV5(t, b, &paho.Connect{ClientID: "plain", CleanStart: true})
	plain.sub1(t, "rap/t", 1)
	old := dialV3(t, b, "v311", 4, true)
	old.sub(t, "rap/t", 1)

	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "rap/t", 1, true, "live retained")
	pub.pub(t, "rap/t", 1, false, "live plain")

	if m := rap.in.waitPayload(t, "live retained"); !m.Retain {
		t.Errorf("Retain As Published subscriber: retained publish arrived with RETAIN 0, want 1 [MQTT-3.3.1-13]")
	}
	if m := rap.in.waitPayload(t, "live plain"); m.Retain {
		t.Errorf("Retain As Published subscriber: non-retained publish arrived with RETAIN 1, want 0")
	}
	if m := plain.in.waitPayload(t, "live retained"); m.Retain {
		t.Errorf("v5 subscriber without Retain As Published: RETAIN 1 on a live message, want 0 [MQTT-3.3.1-12]")
	}
	if m := old.in.waitPayload(t, "live retained"); m.Retain {
		t.Errorf("3.1.1 subscriber: RETAIN 1 on a message forwarded to an existing subscription, want 0 [MQTT-3.3.1-9]")
	}

	late, _ := dialV5(t, b, &paho.Connect{ClientID: "late", CleanStart: true})
	late.sub1(t, "rap/t", 1)
	if m := late.in.waitPayload(t, "live retained"); !m.Retain {
		t.Errorf("retained message sent on a new subscription arrived with RETAIN 0, want 1 [MQTT-3.3.1-8]")
	}
}

// Retain Handling 0 sends retained messages on every subscribe [MQTT-3.3.1-9],
// 1 only when the subscription is new [MQTT-3.3.1-10], 2 never
// [MQTT-3.3.1-11].
func TestConformanceRetainHandlingV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "rh/t", 1, true, "retained")

	subscribe := func(c *v5Client, rh byte) {
		t.Helper()
		sa := c.sub(t, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "rh/t", QoS: 1, RetainHandling: rh}}})
		if len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
			t.Fatalf("SUBSCRIBE rh/t retain handling %d: SUBACK %v, want [1]", rh, sa.Reasons)
		}
	}
	fence := func(c *v5Client, id string) {
		t.Helper()
		pub.pub(t, "rh/fence/"+id, 1, false, "fence-"+id)
		c.in.waitPayload(t, "fence-"+id)
	}
	count := func(c *v5Client) int { return len(c.in.withPayload("retained")) }

	rh := make([]*v5Client, 3)
	for i := range rh {
		rh[i], _ = dialV5(t, b, &paho.Connect{ClientID: fmt.Sprintf("rh%d", i), CleanStart: true})
		rh[i].sub1(t, "rh/fence/#", 0)
	}
	for i, c := range rh {
		subscribe(c, byte(i))
		fence(c, fmt.Sprintf("%d-1", i))
		subscribe(c, byte(i))
		fence(c, fmt.Sprintf("%d-2", i))
	}
	if got := count(rh[0]); got != 2 {
		t.Errorf("retain handling 0: received the retained message %d times over two SUBSCRIBEs, want 2", got)
	}
	if got := count(rh[1]); got != 1 {
		t.Errorf("retain handling 1: received the retained message %d times over a new subscription and a re-subscribe, want 1", got)
	}
	if got := count(rh[2]); got != 0 {
		t.Errorf("retain handling 2: received the retained message %d times, want 0", got)
	}
}

// A subscription's identifier is carried in the PUBLISH packets it causes
// [MQTT-3.3.4-3]; a subscription without one adds none.
func TestConformanceSubscriptionIdentifierDeliveredV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c, _ := dialV5(t, b, &paho.Connect{ClientID: "subid", CleanStart: true})
	c.sub(t, &paho.Subscribe{Properties: &paho.SubscribeProperties{SubscriptionIdentifier: intp(42)},
		Subscriptions: []paho.SubscribeOptions{{Topic: "sid/+", QoS: 1}}})
	c.sub1(t, "noid/t", 1)
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "sid/a", 1, false, "with id")
	pub.pub(t, "noid/t", 1, false, "without id")

	m := c.in.waitPayload(t, "with id")
	if m.Props == nil || m.Props.SubscriptionIdentifier == nil || *m.Props.SubscriptionIdentifier != 42 {
		t.Errorf("message through subscription with identifier 42 carries %v, want Subscription Identifier 42", subIDOf(m))
	}
	m = c.in.waitPayload(t, "without id")
	if m.Props != nil && m.Props.SubscriptionIdentifier != nil {
		t.Errorf("message through subscription without identifier carries Subscription Identifier %d, want none", *m.Props.SubscriptionIdentifier)
	}
}

func subIDOf(m message) any {
	if m.Props == nil || m.Props.SubscriptionIdentifier == nil {
		return "no Subscription Identifier"
	}
	return *m.Props.SubscriptionIdentifier
}

// A shared subscription $share/g/t delivers each message to exactly one
// member of the group, and every message to some member (section 4.8.2).
func TestConformanceSharedSubscriptionDistributes(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	members := make([]*v5Client, 2)
	for i := range members {
		members[i], _ = dialV5(t, b, &paho.Connect{ClientID: fmt.Sprintf("member-%d", i), CleanStart: true})
		members[i].sub1(t, "$share/g/shared/t", 1)
	}
	normal, _ := dialV5(t, b, &paho.Connect{ClientID: "normal", CleanStart: true})
	normal.sub1(t, "shared/t", 1)

	pub, _ := dialV5(t, b, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 20
	for i := range n {
		pub.pub(t, &paho.Publish{Topic: "shared/t", QoS: 1, Payload: fmt.Appendf(nil, "m%02d", i)})
	}
	normal.in.waitCount(t, "non-shared subscriber", n, nil)
	deadline := time.Now().Add(waitTimeout)
	for len(members[0].in.all())+len(members[1].in.all()) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for i := range n {
		p := fmt.Sprintf("m%02d", i)
		got0, got1 := len(members[0].in.withPayload(p)), len(members[1].in.withPayload(p))
		if got0+got1 != 1 {
			t.Errorf("message %s reached member-0 %d times and member-1 %d times, want exactly one delivery to the group", p, got0, got1)
		}
	}
}

// When a shared-subscription member's connection breaks with QoS 1 messages
// unacknowledged and its session ends, those messages go to another member
// (section 4.8.2).
func TestConformanceSharedSubscriptionInFlightGoesToOtherMember(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	stuck := dialRaw(t, b, "member that never acks")
	stuck.connect(connectSpec{Version: 5, ClientID: "stuck", Clean: true, KeepAlive: 30})
	if r := stuck.subscribe(nil, rawSub{Filter: "$share/g/inflight/t", Options: 1}); len(r) != 1 || r[0] != 1 {
		t.Fatalf("SUBACK %v, want [1]", r)
	}
	good, _ := dialV5(t, b, &paho.Connect{ClientID: "good", CleanStart: true})
	good.sub1(t, "$share/g/inflight/t", 1)

	pub, _ := dialV5(t, b, &paho.Connect{ClientID: "pub", CleanStart: true})
	const n = 10
	for i := range n {
		pub.pub(t, &paho.Publish{Topic: "inflight/t", QoS: 1, Payload: fmt.Appendf(nil, "m%02d", i)})
	}
	var toStuck []string
	deadline := time.Now().Add(waitTimeout)
	for len(toStuck)+len(good.in.all()) < n && time.Now().Before(deadline) {
		p, err := stuck.next(50 * time.Millisecond)
		if err == nil && p.Type == tPUBLISH {
			pp, _ := p.publish(true)
			toStuck = append(toStuck, pp.Payload)
		}
	}
	if len(toStuck) == 0 {
		t.Fatalf("the member that never acks was sent none of %d messages; cannot test in-flight hand-over (good member got %d)", n, len(good.in.all()))
	}
	stuck.close()
	for _, p := range toStuck {
		good.in.waitPayload(t, p)
	}
	for i := range n {
		p := fmt.Sprintf("m%02d", i)
		if len(good.in.withPayload(p)) == 0 {
			t.Errorf("message %s never reached the remaining member (sent to the closed member: %v)", p, toStuck)
		}
	}
}

// Overlapping subscriptions: one copy per client, at the highest QoS of the
// matching subscriptions [MQTT-3.3.5-1] (3.1.1).
func TestConformanceOverlappingSubscriptionsOneCopyV311(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialV3(t, b, "overlap", 4, true)
	c.sub(t, "ov/+", 0)
	c.sub(t, "ov/#", 2)
	c.sub(t, "ov/a", 1)
	c.sub(t, "fence", 0)
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "ov/a", 2, false, "overlap")
	pub.pub(t, "fence", 0, false, "fence")
	c.in.waitPayload(t, "fence")
	got := c.in.withPayload("overlap")
	if len(got) != 1 {
		t.Fatalf("client with 3 matching subscriptions received %d copies %v, want exactly 1", len(got), got)
	}
	if got[0].QoS != 2 {
		t.Errorf("received QoS %d, want 2 (the highest granted QoS of the matching subscriptions) [MQTT-3.3.5-1]", got[0].QoS)
	}
}

// v5 overlapping subscriptions: one copy carrying every matching
// Subscription Identifier [MQTT-3.3.4-4], or one copy per subscription each
// with its own identifier [MQTT-3.3.4-5]; either way at the right QoS.
func TestConformanceOverlappingSubscriptionsIdentifiersV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialRaw(t, b, "overlap v5")
	c.connect(connectSpec{Version: 5, ClientID: "overlap5", Clean: true, KeepAlive: 30})
	c.send(subscribePacket(true, 1, [][]byte{pVar(propSubscriptionID, 1)}, rawSub{Filter: "ov/+", Options: 0}))
	c.expect(tSUBACK)
	c.send(subscribePacket(true, 2, [][]byte{pVar(propSubscriptionID, 2)}, rawSub{Filter: "ov/#", Options: 1}))
	c.expect(tSUBACK)
	c.send(subscribePacket(true, 3, nil, rawSub{Filter: "fence", Options: 0}))
	c.expect(tSUBACK)

	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "ov/a", 1, false, "overlap")
	pub.pub(t, "fence", 0, false, "fence")
	var copies []*rawPublish
	for {
		p := c.expectPublish()
		if p.Payload == "fence" {
			break
		}
		copies = append(copies, p)
		if p.QoS > 0 {
			c.send(ackPacket(true, tPUBACK, p.ID))
		}
	}
	switch len(copies) {
	case 1:
		ids := copies[0].Props.nums(propSubscriptionID)
		slices.Sort(ids)
		if !slices.Equal(ids, []uint32{1, 2}) {
			t.Errorf("single copy carries Subscription Identifiers %v, want both 1 and 2 [MQTT-3.3.4-4]", ids)
		}
		if copies[0].QoS != 1 {
			t.Errorf("single copy QoS %d, want 1 (highest of the matching subscriptions)", copies[0].QoS)
		}
	case 2:
		for _, p := range copies {
			ids := p.Props.nums(propSubscriptionID)
			if len(ids) != 1 || (ids[0] == 1 && p.QoS != 0) || (ids[0] == 2 && p.QoS != 1) {
				t.Errorf("copy with Subscription Identifiers %v at QoS %d: each copy must carry its own subscription's identifier and QoS [MQTT-3.3.4-5]", ids, p.QoS)
			}
		}
	default:
		t.Errorf("received %d copies of one message matching two subscriptions, want 1 (or 2 per [MQTT-3.3.4-5])", len(copies))
	}
}

// UNSUBSCRIBE stops delivery through that filter and is acknowledged with the
// same packet identifier [MQTT-3.10.4-4], [MQTT-3.10.4-5].
func TestConformanceUnsubscribeStopsDelivery(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialV3(t, b, "unsub", 4, true)
	c.sub(t, "unsub/t", 1)
	c.sub(t, "fence", 0)
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "unsub/t", 1, false, "before")
	c.in.waitPayload(t, "before")
	tok := c.Unsubscribe("unsub/t")
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("UNSUBSCRIBE not acknowledged: %v", tok.Error())
	}
	pub.pub(t, "unsub/t", 1, false, "after")
	pub.pub(t, "fence", 0, false, "fence")
	c.in.waitPayload(t, "fence")
	if got := c.in.withPayload("after"); len(got) != 0 {
		t.Errorf("received %v after UNSUBSCRIBE was acknowledged", got)
	}

	v5, _ := dialV5(t, b, &paho.Connect{ClientID: "unsub5", CleanStart: true})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ua, err := v5.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"never/subscribed"}})
	if err != nil && ua == nil {
		t.Fatalf("v5 UNSUBSCRIBE: %v", err)
	}
	if len(ua.Reasons) != 1 || ua.Reasons[0] != 0x11 {
		t.Errorf("v5 UNSUBACK for a filter never subscribed: reasons % x, want [11] No subscription existed", ua.Reasons)
	}
}

// Subscribing again to the same filter replaces the subscription
// [MQTT-3.8.4-3]: its QoS and (v5) Subscription Identifier change, and a
// message is still delivered once.
func TestConformanceResubscribeReplacesSubscription(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	pub := dialV3(t, b, "pub", 4, true)

	c3 := dialV3(t, b, "resub3", 4, true)
	c3.sub(t, "resub/t", 0)
	c3.sub(t, "resub/t", 2)
	c3.sub(t, "resub/fence", 0)

	c5, _ := dialV5(t, b, &paho.Connect{ClientID: "resub5", CleanStart: true})
	for _, id := range []int{1, 2} {
		c5.sub(t, &paho.Subscribe{Properties: &paho.SubscribeProperties{SubscriptionIdentifier: intp(id)},
			Subscriptions: []paho.SubscribeOptions{{Topic: "resub/t", QoS: 1}}})
	}
	c5.sub1(t, "resub/fence", 0)

	pub.pub(t, "resub/t", 2, false, "once")
	pub.pub(t, "resub/fence", 0, false, "fence")
	c3.in.waitPayload(t, "fence")
	c5.in.waitPayload(t, "fence")
	if got := c3.in.withPayload("once"); len(got) != 1 || got[0].QoS != 2 {
		t.Errorf("3.1.1 client subscribed at QoS 0 then QoS 2 to the same filter received %v, want one copy at QoS 2", got)
	}
	got := c5.in.withPayload("once")
	if len(got) != 1 {
		t.Fatalf("v5 client that subscribed twice to the same filter received %d copies, want 1", len(got))
	}
	if id := subIDOf(got[0]); id != 2 {
		t.Errorf("v5 message after re-subscribing with Subscription Identifier 2 (was 1) carries %v, want 2", id)
	}
}

// Topic names are UTF-8 with any characters but wildcards and U+0000: spaces,
// non-ASCII and empty levels are delivered intact, and matching is exact
// (case-sensitive) [MQTT-4.7.3-4].
func TestConformanceTopicNamesDeliveredIntact(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	sub := dialV3(t, b, "sub", 4, true)
	sub.sub(t, "names/#", 1)
	sub.sub(t, "Names/exact", 1)
	pub := dialV3(t, b, "pub", 4, true)
	topics := []string{"names/with space", "names/ünïcödé/€", "names//empty/level/", "names/" + strings.Repeat("long", 200), "names/exact"}
	for _, tp := range topics {
		pub.pub(t, tp, 1, false, "to "+tp)
	}
	pub.pub(t, "Names/exact", 1, false, "fence")
	sub.in.waitPayload(t, "fence")
	for _, tp := range topics {
		got := sub.in.withPayload("to " + tp)
		if len(got) != 1 || got[0].Topic != tp {
			t.Errorf("published on %q, received %v; want exactly one message on the same topic", tp, got)
		}
	}
	if got := sub.in.withTopic("Names/exact"); len(got) != 1 {
		t.Errorf("'Names/exact' and 'names/exact' differ only in case: got %d messages on Names/exact, want 1", len(got))
	}
}

// A non-retained message with an empty payload is an ordinary message and is
// delivered with its empty payload.
func TestConformanceEmptyPayloadDelivered(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	sub, _ := dialV5(t, b, &paho.Connect{ClientID: "sub", CleanStart: true})
	sub.sub1(t, "empty/#", 1)
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "empty/t", 1, false, "")
	pub.pub(t, "empty/fence", 1, false, "fence")
	sub.in.waitPayload(t, "fence")
	if got := sub.in.withTopic("empty/t"); len(got) != 1 || got[0].Payload != "" {
		t.Errorf("message with an empty payload: received %v, want one with an empty payload", got)
	}
}

// An invalid topic filter ('#' not last, a wildcard inside a level, an
// empty share name) is never granted [MQTT-4.7.1-1], [MQTT-4.7.1-2],
// [MQTT-4.8.2-1]: the broker answers with a failure in SUBACK (0x80 in
// 3.1.1, 0x8F Topic Filter invalid in 5.0) or closes the connection.
func TestConformanceInvalidTopicFiltersNotGranted(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	filters := []string{"a/#/b", "a/b#", "a+/b", "+a", "$share//t", "$share/g", "$share/g+/t"}
	for _, level := range []byte{4, 5} {
		for i, f := range filters {
			t.Run(fmt.Sprintf("level %d %s", level, f), func(t *testing.T) {
				c := dialRaw(t, b, "subscriber")
				c.connect(connectSpec{Version: level, ClientID: fmt.Sprintf("badfilter-%d-%d", level, i), Clean: true, KeepAlive: 30})
				c.send(subscribePacket(level == 5, 1, nil, rawSub{Filter: f, Options: 1}))
				p, err := c.next(waitTimeout)
				if err != nil {
					return // closed: allowed
				}
				switch p.Type {
				case tSUBACK:
					r := p.subackReasons(level == 5)
					if len(r) != 1 || r[0] < 0x80 {
						t.Errorf("SUBSCRIBE %q: SUBACK %v; want a failure code (0x80, or 0x8F in 5.0)", f, r)
					}
				case tDISCONNECT:
					if level != 5 {
						t.Errorf("3.1.1 SUBSCRIBE %q: got DISCONNECT, which a 3.1.1 server never sends", f)
					}
				default:
					t.Errorf("SUBSCRIBE %q: got %v, want SUBACK with a failure code or the connection closed", f, p)
				}
			})
		}
	}
}
