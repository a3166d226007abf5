package broker

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// v3 connects a paho.mqtt.golang client (3.1.1 unless version says 3) that
// records every message it receives.
func v3(t testing.TB, addr, id string, version uint, clean bool) (mqtt.Client, *received) {
	t.Helper()
	got := newReceived()
	opts := mqtt.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetProtocolVersion(version).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			got.add(recvMsg{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained(), Dup: m.Duplicate()})
		})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("paho v3 %s connect: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(50)
		}
	})
	return c, got
}

func v3sub(t testing.TB, c mqtt.Client, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

func v3pub(t testing.TB, c mqtt.Client, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// v5 connects a paho.golang (MQTT 5.0) client that records every message.
func v5(t testing.TB, addr string, cp *paho.Connect) (*paho.Client, *received, *paho.Connack) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	got := newReceived()
	c := paho.NewClient(paho.ClientConfig{
		Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			m := recvMsg{Topic: p.Topic, Payload: string(p.Payload), QoS: p.QoS, Retain: p.Retain, Dup: p.Duplicate()}
			if p.Properties != nil {
				if id := p.Properties.SubscriptionIdentifier; id != nil {
					m.SubIDs = []int{*id}
				}
			}
			got.add(m)
			return true, nil
		}},
		PacketTimeout: wait,
	})
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		nc.Close()
		t.Fatalf("paho v5 %s connect: %v (%+v)", cp.ClientID, err, ca)
	}
	t.Cleanup(func() {
		select {
		case <-c.Done():
		default:
			c.Disconnect(&paho.Disconnect{})
		}
	})
	return c, got, ca
}

func ctxWait() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), wait)
}

// TestPahoV311QoS exercises QoS 0, 1 and 2 in both directions with
// paho.mqtt.golang: the delivered QoS is the minimum of publish and
// subscription QoS.
func TestPahoV311QoS(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	for sq := byte(0); sq <= 2; sq++ {
		sub, got := v3(t, addr, fmt.Sprintf("sub%d", sq), 4, true)
		v3sub(t, sub, fmt.Sprintf("q/%d/#", sq), sq)
		pub, _ := v3(t, addr, fmt.Sprintf("pub%d", sq), 4, true)
		for pq := byte(0); pq <= 2; pq++ {
			v3pub(t, pub, fmt.Sprintf("q/%d/%d", sq, pq), pq, false, fmt.Sprintf("p%d", pq))
		}
		msgs := got.waitN(t, 3)
		for i, m := range msgs {
			if want := min(byte(i), sq); m.QoS != want || m.Payload != fmt.Sprintf("p%d", i) || m.Retain {
				t.Errorf("sub QoS %d message %d: %+v, want QoS %d", sq, i, m, want)
			}
		}
	}
}

// TestPahoV31 connects an MQTT 3.1 client.
func TestPahoV31(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	sub, got := v3(t, addr, "old", 3, true)
	v3sub(t, sub, "x", 1)
	v3pub(t, sub, "x", 1, false, "hi")
	if m := got.waitN(t, 1)[0]; m.Payload != "hi" {
		t.Fatalf("%+v", m)
	}
}

// TestPahoV5QoS exercises QoS 0, 1 and 2 in both directions with paho.golang
// and checks subscription identifiers on delivery.
func TestPahoV5QoS(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	sub, got, ca := v5(t, addr, &paho.Connect{ClientID: "s5", CleanStart: true})
	if ca.Properties == nil || ca.Properties.ReceiveMaximum == nil || *ca.Properties.ReceiveMaximum != 256 {
		t.Errorf("CONNACK properties %+v", ca.Properties)
	}
	ctx, cancel := ctxWait()
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{
		Properties:    &paho.SubscribeProperties{SubscriptionIdentifier: intp(42)},
		Subscriptions: []paho.SubscribeOptions{{Topic: "v5/#", QoS: 2}},
	}); err != nil {
		t.Fatal(err)
	}
	pub, _, _ := v5(t, addr, &paho.Connect{ClientID: "p5", CleanStart: true})
	for q := byte(0); q <= 2; q++ {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "v5/t", QoS: q, Payload: []byte{'0' + q}}); err != nil {
			t.Fatalf("publish QoS %d: %v", q, err)
		}
	}
	msgs := got.waitN(t, 3)
	for i, m := range msgs {
		if m.QoS != byte(i) || m.Payload != string(rune('0'+i)) {
			t.Errorf("message %d: %+v", i, m)
		}
		if len(m.SubIDs) != 1 || m.SubIDs[0] != 42 {
			t.Errorf("message %d subscription ids %v, want [42]", i, m.SubIDs)
		}
	}
}

func intp(v int) *int { return &v }

// TestRetainedSetReplaceClear: a retained message is delivered with the
// retain flag on subscribe, replaced by the next one, cleared by an empty
// payload; forwarded copies carry retain 0.
func TestRetainedSetReplaceClear(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	pub, _ := v3(t, addr, "pub", 4, true)
	v3pub(t, pub, "r/a", 1, true, "one")
	v3pub(t, pub, "r/a", 1, true, "two")
	v3pub(t, pub, "r/b", 0, true, "bee")

	sub, got := v3(t, addr, "sub", 4, true)
	v3sub(t, sub, "r/#", 1)
	msgs := got.waitN(t, 2)
	byTopic := map[string]recvMsg{}
	for _, m := range msgs {
		byTopic[m.Topic] = m
	}
	if m := byTopic["r/a"]; m.Payload != "two" || !m.Retain || m.QoS != 1 {
		t.Errorf("r/a: %+v", m)
	}
	if m := byTopic["r/b"]; m.Payload != "bee" || !m.Retain || m.QoS != 0 {
		t.Errorf("r/b: %+v", m)
	}
	v3pub(t, pub, "r/a", 1, true, "live")
	if m := got.waitN(t, 3)[2]; m.Payload != "live" || m.Retain {
		t.Errorf("forwarded retained message: %+v, want retain 0", m)
	}
	v3pub(t, pub, "r/a", 1, true, "")
	v3pub(t, pub, "r/b", 1, true, "")
	waitFor(t, "retained store empty", func() bool { return s.Stats().Retained == 0 })

	late, got2 := v3(t, addr, "late", 4, true)
	v3sub(t, late, "r/#", 1)
	v3pub(t, pub, "r/c", 1, false, "marker")
	if m := got2.waitN(t, 1)[0]; m.Payload != "marker" {
		t.Errorf("late subscriber got %+v first, want only the marker", m)
	}
}

// TestWillOnAbnormalDisconnect: a connection that drops without DISCONNECT
// has its will published (retained here); one that sends DISCONNECT does not.
func TestWillOnAbnormalDisconnect(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	sub, got := v3(t, addr, "watcher", 4, true)
	v3sub(t, sub, "status/#", 1)

	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	opts := mqtt.NewClientOptions().AddBroker("tcp://"+addr).SetClientID("polite").
		SetWill("status/polite", "gone", 1, false).SetAutoReconnect(false)
	polite := mqtt.NewClient(opts)
	if tok := polite.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	polite.Disconnect(50)

	rude := newRaw(t, nc, 4)
	ack := rude.connect(rawConnect{id: "rude", will: "status/rude", willPayload: "lost", willQoS: 1, willRetain: true}.packet())
	if ack.Reason != 0 {
		t.Fatalf("CONNACK %#x", ack.Reason)
	}
	nc.Close()
	m := got.waitN(t, 1)[0]
	if m.Topic != "status/rude" || m.Payload != "lost" || m.QoS != 1 {
		t.Fatalf("will: %+v", m)
	}
	// Retained: a later subscriber sees it too.
	late, got2 := v3(t, addr, "late", 4, true)
	v3sub(t, late, "status/#", 1)
	if m := got2.waitN(t, 1)[0]; m.Topic != "status/rude" || !m.Retain {
		t.Fatalf("retained will: %+v", m)
	}
	for _, m := range got.all() {
		if m.Topic == "status/polite" {
			t.Fatalf("will published after a normal DISCONNECT")
		}
	}
}
