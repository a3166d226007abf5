package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

var versions = []struct {
	name string
	v    packet.Version
}{{"v3.1.1", packet.V311}, {"v5", packet.V5}}

// brokers are the servers the round-trip tests run against; each returns the
// URL of a fresh broker.
var brokers = []struct {
	name  string
	start func(t *testing.T) string
}{
	{"mosquitto", func(t *testing.T) string { return startMosquitto(t, "").URL() }},
	{"gatewayd", func(t *testing.T) string { return startGatewayd(t) }},
}

func forEach(t *testing.T, f func(t *testing.T, url string, v packet.Version)) {
	for _, br := range brokers {
		t.Run(br.name, func(t *testing.T) {
			url := br.start(t)
			for _, ver := range versions {
				t.Run(ver.name, func(t *testing.T) { f(t, url, ver.v) })
			}
		})
	}
}

func TestConnectReportsServerAndState(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		var mu sync.Mutex
		var states []State
		c := connect(t, Options{URL: url, ClientID: "state-" + t.Name(), Protocol: v, CleanStart: true,
			AutoReconnect: true, Backoff: Backoff{Base: time.Nanosecond, Cap: time.Nanosecond},
			OnReconnectWait: func(int, time.Duration) { t.Errorf("reconnecting after Disconnect") },
			OnConnectionChange: func(s State, err error) {
				mu.Lock()
				states = append(states, s)
				mu.Unlock()
				if err != nil {
					t.Errorf("state %v with error %v", s, err)
				}
			}})
		if c.State() != StateConnected {
			t.Fatalf("state %v after Connect", c.State())
		}
		if si := c.Server(); si.SessionPresent || si.ReceiveMaximum == 0 || si.MaximumQoS == 0 {
			t.Fatalf("server info %+v", si)
		}
		if err := c.Disconnect(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if c.State() != StateDisconnected {
			t.Fatalf("state %v after Disconnect", c.State())
		}
		mu.Lock()
		defer mu.Unlock()
		want := []State{StateConnecting, StateConnected, StateDisconnected}
		if fmt.Sprint(states) != fmt.Sprint(want) {
			t.Fatalf("state changes %v, want %v", states, want)
		}
	})
}

func TestRoundTripQoS(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		sub := connect(t, Options{URL: url, Protocol: v, ClientID: "sub", CleanStart: true})
		pub := connect(t, Options{URL: url, Protocol: v, ClientID: "pub", CleanStart: true})
		got := newCollector()
		for q := byte(0); q <= 2; q++ {
			rc, err := sub.Subscribe(testCtx(t), got.handle, Subscription{Filter: fmt.Sprintf("rt/q%d/+", q), QoS: q})
			if err != nil {
				t.Fatal(err)
			}
			if rc[0] != packet.ReasonCode(q) {
				t.Fatalf("granted %v for QoS %d", rc, q)
			}
		}
		for sq := byte(0); sq <= 2; sq++ {
			for pq := byte(0); pq <= 2; pq++ {
				topic := fmt.Sprintf("rt/q%d/p%d", sq, pq)
				payload := []byte(topic + " payload")
				if err := pub.Publish(testCtx(t), &Message{Topic: topic, Payload: payload, QoS: pq}); err != nil {
					t.Fatalf("publish QoS %d: %v", pq, err)
				}
				m := got.next(t)
				if m.Topic != topic || !bytes.Equal(m.Payload, payload) || m.QoS != min(sq, pq) || m.Retain {
					t.Fatalf("got %+v, want %s %q QoS %d", m, topic, payload, min(sq, pq))
				}
			}
		}
		if err := sub.Unsubscribe(testCtx(t), "rt/q1/+"); err != nil {
			t.Fatal(err)
		}
		pub.Publish(testCtx(t), &Message{Topic: "rt/q1/gone", Payload: []byte("x"), QoS: 1})
		pub.Publish(testCtx(t), &Message{Topic: "rt/q2/after", Payload: []byte("y"), QoS: 2})
		if m := got.next(t); m.Topic != "rt/q2/after" {
			t.Fatalf("after unsubscribe got %s", m.Topic)
		}
	})
}

func TestPublishAsyncCompletesEveryMessage(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		sub := connect(t, Options{URL: url, Protocol: v, CleanStart: true, ClientID: "async-sub"})
		got := newCollector()
		// QoS 1: when messages of both QoS wait behind a subscriber's full
		// inflight window, mosquitto 2.0.11 sends them out of order (seen on
		// the wire); delivered at one QoS they keep their order.
		if _, err := sub.Subscribe(testCtx(t), got.handle, Subscription{Filter: "async/#", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		pub := connect(t, Options{URL: url, Protocol: v, CleanStart: true, ClientID: "async-pub"})
		const n = 300
		errs := make(chan error, n)
		for i := range n {
			pub.PublishAsync(&Message{Topic: "async/t", Payload: fmt.Appendf(nil, "%d", i), QoS: byte(1 + i%2)}, func(err error) { errs <- err })
		}
		for range n {
			select {
			case err := <-errs:
				if err != nil {
					t.Fatal(err)
				}
			case <-testCtx(t).Done():
				t.Fatal("not every publish completed")
			}
		}
		// Handlers see the messages of each QoS in the order they were
		// published (MQTT orders messages per topic and publishing QoS only).
		last := [2]int{-1, -1}
		for range n {
			m := got.next(t)
			var i int
			fmt.Sscan(string(m.Payload), &i)
			if i <= last[i%2] {
				t.Fatalf("QoS %d message %d after %d", 1+i%2, i, last[i%2])
			}
			last[i%2] = i
		}
	})
}

func TestRetained(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		pub := connect(t, Options{URL: url, Protocol: v, CleanStart: true})
		topic := "retained/" + t.Name()
		if err := pub.Publish(testCtx(t), &Message{Topic: topic, Payload: []byte("last"), QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
		sub := connect(t, Options{URL: url, Protocol: v, CleanStart: true})
		got := newCollector()
		if _, err := sub.Subscribe(testCtx(t), got.handle, Subscription{Filter: topic, QoS: 1}); err != nil {
			t.Fatal(err)
		}
		m := got.next(t)
		if !m.Retain || string(m.Payload) != "last" {
			t.Fatalf("got %+v", m)
		}
		// Clear it: an empty retained message.
		if err := pub.Publish(testCtx(t), &Message{Topic: topic, QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
		if m := got.next(t); len(m.Payload) != 0 {
			t.Fatalf("got %+v", m)
		}
	})
}

func TestWillPublishedWhenConnectionKilled(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		watcher := connect(t, Options{URL: url, Protocol: v, CleanStart: true})
		got := newCollector()
		if _, err := watcher.Subscribe(testCtx(t), got.handle, Subscription{Filter: "will/#", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		addr := url[len("mqtt://"):]
		raw := make(chan net.Conn, 1)
		lost := make(chan error, 1)
		connect(t, Options{
			Protocol: v, ClientID: "dying", CleanStart: true,
			Dialer: func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					raw <- c
				}
				return c, err
			},
			Will: &Will{Message: Message{Topic: "will/dying", Payload: []byte("offline"), QoS: 1}},
			OnConnectionChange: func(s State, err error) {
				if s == StateDisconnected {
					lost <- err
				}
			},
		})
		(<-raw).Close()
		if err := <-lost; err == nil {
			t.Fatal("connection loss reported without an error")
		}
		m := got.next(t)
		if m.Topic != "will/dying" || string(m.Payload) != "offline" {
			t.Fatalf("got %+v", m)
		}
	})
}

func TestWillNotPublishedOnDisconnect(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		watcher := connect(t, Options{URL: url, Protocol: v, CleanStart: true})
		got := newCollector()
		if _, err := watcher.Subscribe(testCtx(t), got.handle, Subscription{Filter: "will2/#", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		c := connect(t, Options{URL: url, Protocol: v, CleanStart: true,
			Will: &Will{Message: Message{Topic: "will2/gone", Payload: []byte("offline"), QoS: 1}}})
		if err := c.Disconnect(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		// A marker published after the disconnect is processed arrives
		// after any will would have.
		other := connect(t, Options{URL: url, Protocol: v, CleanStart: true})
		if err := other.Publish(testCtx(t), &Message{Topic: "will2/marker", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		if m := got.next(t); m.Topic != "will2/marker" {
			t.Fatalf("got %s before the marker", m.Topic)
		}
		if v != packet.V5 {
			return
		}
		c2 := connect(t, Options{URL: url, Protocol: v, CleanStart: true,
			Will: &Will{Message: Message{Topic: "will2/asked", Payload: []byte("bye"), QoS: 1}}})
		if err := c2.DisconnectWithWill(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if m := got.next(t); m.Topic != "will2/asked" {
			t.Fatalf("got %s, want the will", m.Topic)
		}
	})
}

func TestV5PropertiesRoundTrip(t *testing.T) {
	for _, br := range brokers {
		t.Run(br.name, func(t *testing.T) {
			url := br.start(t)
			sub := connect(t, Options{URL: url, CleanStart: true})
			got := newCollector()
			if _, err := sub.Subscribe(testCtx(t), got.handle, Subscription{Filter: "props/#", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			pub := connect(t, Options{URL: url, CleanStart: true})
			want := &Message{
				Topic: "props/x", Payload: []byte(`{"t":21.5}`), QoS: 1,
				PayloadFormat: 1, MessageExpiry: time.Hour, ContentType: "application/json",
				ResponseTopic: "props/reply", CorrelationData: []byte{1, 2, 3},
				UserProperties: []UserProperty{{"unit", "C"}, {"unit", "F"}, {"sensor", "bme280"}},
			}
			if err := pub.Publish(testCtx(t), want); err != nil {
				t.Fatal(err)
			}
			m := got.next(t)
			if m.PayloadFormat != 1 || m.ContentType != want.ContentType || m.ResponseTopic != want.ResponseTopic ||
				!bytes.Equal(m.CorrelationData, want.CorrelationData) || fmt.Sprint(m.UserProperties) != fmt.Sprint(want.UserProperties) ||
				m.MessageExpiry <= 0 || m.MessageExpiry > time.Hour {
				t.Fatalf("got %+v\nwant %+v", m, want)
			}
		})
	}
}

func TestNoLocal(t *testing.T) {
	url := startMosquitto(t, "").URL()
	c := connect(t, Options{URL: url, CleanStart: true})
	got := newCollector()
	if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "nolocal/a", QoS: 1, NoLocal: true},
		Subscription{Filter: "nolocal/b", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	c.Publish(testCtx(t), &Message{Topic: "nolocal/a", QoS: 1})
	c.Publish(testCtx(t), &Message{Topic: "nolocal/b", QoS: 1})
	if m := got.next(t); m.Topic != "nolocal/b" {
		t.Fatalf("got own message on %s", m.Topic)
	}
}

func TestInvalidFilterAndTopicRefusedByClient(t *testing.T) {
	m := startMosquitto(t, "")
	c := connect(t, Options{URL: m.URL(), CleanStart: true})
	if _, err := c.Subscribe(testCtx(t), func(*Message) {}, Subscription{Filter: "a/#/b"}); err == nil {
		t.Fatal("invalid filter accepted")
	}
	if err := c.Publish(testCtx(t), &Message{Topic: "a/+", QoS: 1}); err == nil {
		t.Fatal("wildcard topic accepted")
	}
	// Nothing invalid reached the server: the connection is still usable.
	if err := c.Publish(testCtx(t), &Message{Topic: "a/b", QoS: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestNotConnected(t *testing.T) {
	c, err := New(Options{URL: "mqtt://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(testCtx(t), &Message{Topic: "x", QoS: 1}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("publish: %v", err)
	}
	if _, err := c.Subscribe(testCtx(t), func(*Message) {}, Subscription{Filter: "x"}); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("subscribe: %v", err)
	}
	if err := c.Disconnect(testCtx(t)); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("disconnect: %v", err)
	}
	if err := c.Connect(testCtx(t)); err == nil {
		t.Fatal("connected to a closed port")
	}
}

func TestOptionsValidation(t *testing.T) {
	for _, o := range []Options{
		{},
		{URL: "http://x"},
		{URL: "mqtt://"},
		{URL: "mqtt://x", Protocol: 3},
		{URL: "mqtt://x", Protocol: packet.V311, Password: "p"},
		{URL: "mqtt://x", Will: &Will{Message: Message{Topic: "a/#"}}},
		{URL: "mqtt://x", Protocol: packet.V311}, // no client id and no clean session
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
