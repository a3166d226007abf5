package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// A persistent 3.1.1 session keeps its subscriptions and the QoS 1 and 2
// messages published while it was offline [MQTT-3.1.2-4], [MQTT-3.1.2-5];
// they arrive on reconnect without subscribing again.
func TestConformancePersistentSessionQueuesWhileOfflineV311(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	sub := dialV3(t, b, "persist311", 4, false)
	sub.sub(t, "ps/#", 2)
	sub.Disconnect(100)
	waitOffline(t, b, 1)

	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "ps/1", 1, false, "q1-a")
	pub.pub(t, "ps/2", 2, false, "q2")
	pub.pub(t, "ps/1", 1, false, "q1-b")

	sub, tok := connectV3(t, v3Options(b, "persist311", 4, false))
	if err := tok.Error(); err != nil {
		t.Fatalf("reconnect refused: %v", err)
	}
	if !tok.SessionPresent() {
		t.Errorf("reconnect with clean session 0: Session Present 0, want 1")
	}
	for _, want := range []struct {
		payload string
		qos     byte
	}{{"q1-a", 1}, {"q2", 2}, {"q1-b", 1}} {
		m := sub.in.waitPayload(t, want.payload)
		if m.QoS != want.qos {
			t.Errorf("queued %q arrived at QoS %d, want %d", want.payload, m.QoS, want.qos)
		}
	}
	var order []string
	for _, m := range sub.in.all() {
		order = append(order, m.Payload)
	}
	if strings.Join(order, ",") != "q1-a,q2,q1-b" {
		t.Errorf("queued messages arrived as %v, want [q1-a q2 q1-b] (in publish order, once each)", order)
	}
	pub.pub(t, "ps/live", 1, false, "live")
	sub.in.waitPayload(t, "live")
}

// The same for a v5 session with a Session Expiry Interval.
func TestConformancePersistentSessionQueuesWhileOfflineV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	cp := func() *paho.Connect {
		return &paho.Connect{ClientID: "persist5", CleanStart: false, KeepAlive: 30,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: u32p(60)}}
	}
	sub, _ := dialV5(t, b, cp())
	sub.sub1(t, "ps5/#", 2)
	if err := sub.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatalf("DISCONNECT: %v", err)
	}
	waitOffline(t, b, 1)
	pub, _ := dialV5(t, b, &paho.Connect{ClientID: "pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "ps5/a", QoS: 1, Payload: []byte("q1")})
	pub.pub(t, &paho.Publish{Topic: "ps5/b", QoS: 2, Payload: []byte("q2")})

	sub, ca := dialV5(t, b, cp())
	if !ca.SessionPresent {
		t.Errorf("reconnect within the Session Expiry Interval: Session Present 0, want 1")
	}
	if m := sub.in.waitPayload(t, "q1"); m.QoS != 1 {
		t.Errorf("queued QoS 1 message arrived at QoS %d", m.QoS)
	}
	if m := sub.in.waitPayload(t, "q2"); m.QoS != 2 {
		t.Errorf("queued QoS 2 message arrived at QoS %d", m.QoS)
	}
}

// An offline session's queue is bounded by max_queued_messages: what does
// not fit is dropped and counted in Stats, the rest is delivered.
func TestConformancePersistentSessionQueueIsBounded(t *testing.T) {
	const limit, sent = 5, 20
	b := startBroker(t, func(c *broker.Config) { c.MaxQueuedMessages = limit }, broker.Options{})
	sub := dialV3(t, b, "bounded", 4, false)
	sub.sub(t, "bq/t", 1)
	sub.sub(t, "bq/fence", 0)
	sub.Disconnect(100)
	waitOffline(t, b, 1)

	before := b.Stats()
	pub := dialV3(t, b, "pub", 4, true)
	for i := range sent {
		pub.pub(t, "bq/t", 1, false, fmt.Sprintf("m%02d", i))
	}
	after := b.Stats()
	if got := after.DroppedQueueFull - before.DroppedQueueFull; got != sent-limit {
		t.Errorf("%d QoS 1 messages for an offline session with max_queued_messages %d: Stats().DroppedQueueFull rose by %d, want %d", sent, limit, got, sent-limit)
	}
	if after.PublishDropped < before.PublishDropped+sent-limit {
		t.Errorf("Stats().PublishDropped rose by %d, want at least %d", after.PublishDropped-before.PublishDropped, sent-limit)
	}

	sub, tok := connectV3(t, v3Options(b, "bounded", 4, false))
	if err := tok.Error(); err != nil {
		t.Fatalf("reconnect refused: %v", err)
	}
	got := sub.in.waitCount(t, "queued messages after reconnect", limit, func(m message) bool { return m.Topic == "bq/t" })
	pub.pub(t, "bq/fence", 1, false, "fence")
	sub.in.waitPayload(t, "fence")
	got = sub.in.withTopic("bq/t")
	if len(got) != limit {
		t.Errorf("after reconnect received %d queued messages, want %d (max_queued_messages): %v", len(got), limit, got)
	}
}

// A subscriber that stops reading neither blocks the publisher nor delays
// other subscribers: QoS 0 messages it cannot take are dropped and counted,
// and its buffered output stays bounded.
func TestConformanceSlowConsumerDoesNotBlockOthers(t *testing.T) {
	const n, size = 2500, 4096 // 10 MB, more than the kernel buffers on both sides
	b := startBroker(t, func(c *broker.Config) {
		c.MaxQueuedMessages = 100
	}, broker.Options{})

	// The stuck subscriber: a tiny receive buffer and no reads after SUBACK.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", b.addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	stuck := &rawClient{t: t, conn: conn, name: "stuck subscriber"}
	stuck.br = bufio.NewReader(conn)
	stuck.connect(connectSpec{Version: 4, ClientID: "stuck", Clean: true, KeepAlive: 0})
	stuck.subscribe(nil, rawSub{Filter: "slow/t", Options: 0})

	healthy, _ := dialV5(t, b, &paho.Connect{ClientID: "healthy", CleanStart: true})
	healthy.sub1(t, "slow/t", 0)

	before := b.Stats()
	pub, _ := dialV5(t, b, &paho.Connect{ClientID: "pub", CleanStart: true})
	payload := strings.Repeat("p", size-8)
	// The publisher goes in batches and waits for the healthy subscriber to
	// catch up, so that only the stuck subscriber can fall behind.
	const batch = 25
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := pub.Publish(context.Background(), &paho.Publish{Topic: "slow/t", QoS: 0, Payload: fmt.Appendf(nil, "%06d%s", i, payload)}); err != nil {
				errc <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			if (i+1)%batch == 0 {
				deadline := time.Now().Add(waitTimeout)
				for len(healthy.in.all()) < i+1 {
					if time.Now().After(deadline) {
						errc <- fmt.Errorf("healthy subscriber has %d of the first %d messages after %v", len(healthy.in.all()), i+1, waitTimeout)
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
		}
		errc <- nil
	}()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("while one subscriber reads nothing: %v", err)
		}
	case <-time.After(60 * time.Second):
		_ = pub.Disconnect(&paho.Disconnect{})
		t.Fatalf("publisher still not done after 60 s publishing %d QoS 0 messages while one subscriber reads nothing (blocked?); healthy subscriber has %d; publish ended with %v", n, len(healthy.in.all()), <-errc)
	}
	healthy.in.waitCount(t, "healthy subscriber", n, nil)
	after := b.Stats()
	dropped := after.DroppedSlowConsumer - before.DroppedSlowConsumer
	// The kernel can hold at most ~4 MB towards the stuck client; everything
	// else the broker either dropped or kept in memory. Keeping more than
	// max_output_bytes would show as fewer drops than this.
	if minDropped := uint64(n / 4); dropped < minDropped {
		t.Errorf("Stats().DroppedSlowConsumer rose by %d for a subscriber that read nothing of %d MB; want at least %d (the rest cannot fit in kernel buffers plus the broker's bounded output buffer)", dropped, n*size>>20, minDropped)
	}
	if after.PublishDropped <= before.PublishDropped {
		t.Errorf("Stats().PublishDropped stayed at %d although a subscriber read nothing", after.PublishDropped)
	}
	t.Logf("dropped for the slow consumer: %d of %d", dropped, n)
}

// An online subscriber that stops acknowledging QoS 1 gets at most
// max_inflight messages in flight, at most max_queued_messages more are
// queued, and the rest are dropped and counted: once it acknowledges, it
// receives exactly the messages that were not counted as dropped.
func TestConformanceOnlineQueueIsBoundedAndAccounted(t *testing.T) {
	const inflight, queued, sent = 2, 3, 10
	b := startBroker(t, func(c *broker.Config) {
		c.MaxInflight = inflight
		c.MaxQueuedMessages = queued
	}, broker.Options{})
	c := dialRaw(t, b, "slow acker")
	c.connect(connectSpec{Version: 4, ClientID: "slow-acker", Clean: true, KeepAlive: 30})
	c.subscribe(nil, rawSub{Filter: "oq/t", Options: 1})
	before := b.Stats()
	pub := dialV3(t, b, "pub", 4, true)
	for i := range sent {
		pub.pub(t, "oq/t", 1, false, fmt.Sprintf("m%d", i))
	}
	var ids []uint16
	for range inflight {
		ids = append(ids, c.expectPublish().ID)
	}
	c.expectNothing(fmt.Sprintf("%d QoS 1 messages unacknowledged with max_inflight %d", inflight, inflight))
	dropped := int(b.Stats().DroppedQueueFull - before.DroppedQueueFull)
	if dropped < sent-inflight-queued || dropped > sent-inflight {
		t.Errorf("Stats().DroppedQueueFull rose by %d; with %d sent, %d in flight and max_queued_messages %d want between %d and %d", dropped, sent, inflight, queued, sent-inflight-queued, sent-inflight)
	}
	got := inflight
	for _, id := range ids {
		c.send(ackPacket(false, tPUBACK, id))
	}
	for got < sent-dropped {
		p := c.expectPublish()
		c.send(ackPacket(false, tPUBACK, p.ID))
		got++
	}
	c.expectNothing(fmt.Sprintf("after %d delivered and %d counted as dropped of %d", got, dropped, sent))
}

// max_session_expiry is the expiry of 3.1.1 persistent sessions and caps a v5
// client's Session Expiry Interval; CONNACK tells a v5 client the value used
// (section 3.2.2.3.2).
func TestConformanceMaxSessionExpiry(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaxSessionExpiry = time.Second }, broker.Options{})
	sub := dialV3(t, b, "capped311", 4, false)
	sub.sub(t, "cap/t", 1)
	sub.Disconnect(100)

	c, ca := dialV5(t, b, &paho.Connect{ClientID: "capped5", CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32p(3600)}})
	if ca.Properties == nil || ca.Properties.SessionExpiryInterval == nil || *ca.Properties.SessionExpiryInterval != 1 {
		var got any = "absent"
		if ca.Properties != nil && ca.Properties.SessionExpiryInterval != nil {
			got = *ca.Properties.SessionExpiryInterval
		}
		t.Errorf("v5 client asked for Session Expiry Interval 3600 with max_session_expiry 1s: CONNACK Session Expiry Interval %v, want 1", got)
	}
	c.sub1(t, "cap/t", 1)
	_ = c.Disconnect(&paho.Disconnect{})

	time.Sleep(2 * time.Second) // past the 1 s cap
	_, tok := connectV3(t, v3Options(b, "capped311", 4, false))
	if tok.Error() == nil && tok.SessionPresent() {
		t.Errorf("3.1.1 persistent session reconnecting 2 s after disconnect with max_session_expiry 1s: Session Present 1, want 0 (expired)")
	}
	_, ca = dialV5(t, b, &paho.Connect{ClientID: "capped5", CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32p(3600)}})
	if ca.SessionPresent {
		t.Errorf("v5 session (asked 3600 s, capped to 1 s) reconnecting 2 s later: Session Present 1, want 0 (expired)")
	}
}
