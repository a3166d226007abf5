package testproxy_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"gatewayd/broker/client"
	"gatewayd/broker/packet"
	"gatewayd/internal/testbroker"
	"gatewayd/internal/testenv"
	"gatewayd/internal/testproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), testenv.Scale(20*time.Second))
	t.Cleanup(cancel)
	return c
}

func connect(t *testing.T, url, id string) *client.Client {
	t.Helper()
	c, err := client.New(client.Options{URL: url, ClientID: id, CleanStart: true, Protocol: packet.V311})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return c
}

// Held acknowledgements do not reach the client until released; then they
// all do, in the order the broker sent them, and the watcher sees each as it
// is passed on.
func TestHoldBackAcknowledgements(t *testing.T) {
	srv := testbroker.Start(t, nil)
	p := testproxy.New(t, testbroker.Addr(srv))
	var mu sync.Mutex
	var acks []uint16
	p.Watch(func(e testproxy.Event) {
		if e.Dir == testproxy.ToClient && e.Header.Type == packet.PUBACK {
			mu.Lock()
			acks = append(acks, uint16(e.Body[0])<<8|uint16(e.Body[1]))
			mu.Unlock()
		}
	})
	// A subscriber straight on the broker: once it has a message, the
	// broker has handled its PUBLISH and sent the PUBACK.
	got := make(chan string, 10)
	sub := connect(t, testbroker.URL(srv), "sub")
	if _, err := sub.Subscribe(ctx(t), func(m *client.Message) { got <- string(m.Payload) }, client.Subscription{Filter: "t", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	pub := connect(t, p.URL(), "pub")
	p.Hold(testproxy.ToClient, true)
	const n = 3
	done := make(chan error, n)
	for i := range n {
		pub.PublishAsync(&client.Message{Topic: "t", Payload: []byte(strconv.Itoa(i)), QoS: 1}, func(err error) { done <- err })
	}
	for i := range n {
		select {
		case m := <-got:
			if m != strconv.Itoa(i) {
				t.Fatalf("subscriber got %q, want %d", m, i)
			}
		case <-ctx(t).Done():
			t.Fatal("the broker did not get the messages")
		}
	}
	select {
	case err := <-done:
		t.Fatalf("a publish completed while its acknowledgement was held back (%v)", err)
	default:
	}
	mu.Lock()
	if len(acks) != 0 {
		t.Errorf("watcher saw PUBACKs %v passed on while held", acks)
	}
	mu.Unlock()
	p.Hold(testproxy.ToClient, false)
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acks) != n || acks[0] >= acks[1] || acks[1] >= acks[2] {
		t.Errorf("PUBACKs passed on: %v, want %d in increasing order", acks, n)
	}
	if pubs := p.Sent(packet.PUBLISH); len(pubs) != n || pubs[0].ID() != acks[0] {
		t.Errorf("recorded PUBLISH %d, want %d with the first id %d", len(pubs), n, acks[0])
	}
}

// DropSubscribes closes the connection at the client's SUBSCRIBE, once; Cut
// with refuse keeps clients out until Restore.
func TestDropSubscribeAndRefuse(t *testing.T) {
	srv := testbroker.Start(t, nil)
	p := testproxy.New(t, testbroker.Addr(srv))
	p.DropSubscribes(1)
	c := connect(t, p.URL(), "a")
	if _, err := c.Subscribe(ctx(t), func(*client.Message) {}, client.Subscription{Filter: "t"}); err == nil {
		t.Fatal("SUBSCRIBE answered through a proxy that closes at it")
	}
	if n := len(p.Sent(packet.SUBSCRIBE)); n != 1 {
		t.Fatalf("%d SUBSCRIBE recorded, want 1", n)
	}
	c = connect(t, p.URL(), "b")
	if _, err := c.Subscribe(ctx(t), func(*client.Message) {}, client.Subscription{Filter: "t"}); err != nil {
		t.Fatalf("second SUBSCRIBE: %v", err)
	}

	p.Cut(true)
	refused, err := client.New(client.Options{URL: p.URL(), ClientID: "c", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := refused.Connect(ctx(t)); err == nil {
		refused.Disconnect(context.Background())
		t.Fatal("connected through a cut proxy")
	}
	p.Restore()
	connect(t, p.URL(), "c")
}
