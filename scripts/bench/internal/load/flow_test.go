package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"gatewayd/scripts/bench/internal/forward"
	"gatewayd/scripts/bench/internal/wire"
)

// startForwarder runs the zero-logic forwarder on a loopback port.
func startForwarder(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go forward.Serve(ln)
	return ln.Addr().String()
}

// startEpoll runs the epoll forwarder on a loopback port; at the end of the
// test it is stopped and must have closed every connection.
func startEpoll(t *testing.T) (string, *forward.Epoll) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &forward.Epoll{}
	done := make(chan error, 1)
	go func() { done <- e.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve returned %v, want the closed listener's error", err)
		}
		if st := e.Stats(); st.Conns != 0 || st.Malformed != 0 || st.Failed != 0 || st.EpollErrors != 0 {
			t.Errorf("after Serve: %v", st)
		}
	})
	return ln.Addr().String(), e
}

// forwarders runs f as a subtest on each forwarder.
func forwarders(t *testing.T, f func(t *testing.T, addr string)) {
	t.Run("goroutines", func(t *testing.T) { f(t, startForwarder(t)) })
	t.Run("epoll", func(t *testing.T) {
		addr, _ := startEpoll(t)
		f(t, addr)
	})
}

type flowCase struct {
	pubs, subs int
	qos        byte
	rate       float64
	per        uint64
}

// runFlow publishes per messages from each publisher and waits (bounded) until
// every subscriber has them all.
func runFlow(t *testing.T, addr string, c flowCase) ([]*Subscriber, []*Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var subs []*Subscriber
	for i := 0; i < c.subs; i++ {
		s, err := DialSubscriber(ctx, SubscriberConfig{Addr: addr, ClientID: fmt.Sprintf("%s-s%d", t.Name(), i),
			Clean: true, Filters: []string{"t"}, QoS: c.qos, Publishers: c.pubs})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
		go s.Run()
	}
	var pubs []*Publisher
	for i := 0; i < c.pubs; i++ {
		p, err := DialPublisher(ctx, PublisherConfig{Addr: addr, ClientID: fmt.Sprintf("%s-p%d", t.Name(), i), ID: uint32(i),
			Topics: []string{"t"}, QoS: c.qos, Rate: c.rate, Window: 8, Batch: 16, Max: c.per})
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, p)
	}
	stop := make(chan struct{})
	timer := time.AfterFunc(20*time.Second, func() { close(stop) })
	defer timer.Stop()
	done := make(chan error, len(pubs))
	for _, p := range pubs {
		go func() { done <- p.Run(stop, time.Now().Add(20*time.Second)) }()
	}
	for range pubs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	want := c.per * uint64(c.pubs)
	deadline := time.Now().Add(20 * time.Second)
	for _, s := range subs {
		for s.Unique() < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	for _, s := range subs {
		if err := s.Close(true); err != nil {
			t.Errorf("subscriber: %v", err)
		}
	}
	for _, p := range pubs {
		if err := p.Close(); err != nil {
			t.Errorf("publisher: %v", err)
		}
	}
	return subs, pubs
}

func checkAllDelivered(t *testing.T, subs []*Subscriber, pubs []*Publisher, c flowCase) {
	t.Helper()
	for _, p := range pubs {
		if p.Sent() != c.per {
			t.Errorf("publisher sent %d, want %d", p.Sent(), c.per)
		}
		if c.qos > 0 && p.Acked() != p.Sent() {
			t.Errorf("publisher acked %d of %d", p.Acked(), p.Sent())
		}
	}
	want := c.per * uint64(c.pubs)
	for i, s := range subs {
		v := s.V
		if v.Unique != want || v.Received != want || v.Dups+v.Reordered+v.Corrupt+v.Misrouted != 0 {
			t.Errorf("subscriber %d: want %d, got received %d unique %d dup %d reordered %d corrupt %d misrouted %d",
				i, want, v.Received, v.Unique, v.Dups, v.Reordered, v.Corrupt, v.Misrouted)
		}
		if v.Latency.Count() != want {
			t.Errorf("subscriber %d: %d latencies for %d messages", i, v.Latency.Count(), want)
		}
	}
}

func TestQoS0FanInIsDeliveredAndVerified(t *testing.T) {
	forwarders(t, func(t *testing.T, addr string) {
		c := flowCase{pubs: 3, subs: 1, per: 5000}
		subs, pubs := runFlow(t, addr, c)
		checkAllDelivered(t, subs, pubs, c)
	})
}

func TestQoS0FanOutReachesEverySubscriber(t *testing.T) {
	forwarders(t, func(t *testing.T, addr string) {
		c := flowCase{pubs: 1, subs: 4, per: 3000}
		subs, pubs := runFlow(t, addr, c)
		checkAllDelivered(t, subs, pubs, c)
	})
}

func TestQoS1PublishersGetEveryPubackWithAWindow(t *testing.T) {
	forwarders(t, func(t *testing.T, addr string) {
		c := flowCase{pubs: 2, subs: 1, qos: 1, per: 3000}
		subs, pubs := runFlow(t, addr, c)
		checkAllDelivered(t, subs, pubs, c)
	})
}

func TestQoS1FanOutReachesEverySubscriber(t *testing.T) {
	forwarders(t, func(t *testing.T, addr string) {
		c := flowCase{pubs: 1, subs: 3, qos: 1, per: 3000}
		subs, pubs := runFlow(t, addr, c)
		checkAllDelivered(t, subs, pubs, c)
	})
}

func TestPacedPublisherSendsItsCount(t *testing.T) {
	forwarders(t, func(t *testing.T, addr string) {
		c := flowCase{pubs: 2, subs: 1, rate: 2000, per: 200}
		subs, pubs := runFlow(t, addr, c)
		checkAllDelivered(t, subs, pubs, c)
	})
}

func TestStopEndsASaturatedPublisher(t *testing.T) {
	forwarders(t, testStopEndsASaturatedPublisher)
}

func testStopEndsASaturatedPublisher(t *testing.T, addr string) {
	ctx := context.Background()
	s, err := DialSubscriber(ctx, SubscriberConfig{Addr: addr, ClientID: "s", Clean: true, Filters: []string{"t"}, Publishers: 1})
	if err != nil {
		t.Fatal(err)
	}
	go s.Run()
	p, err := DialPublisher(ctx, PublisherConfig{Addr: addr, ClientID: "p", Topics: []string{"t"}, Max: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	time.AfterFunc(100*time.Millisecond, func() { close(stop) })
	if err := p.Run(stop, time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if p.Sent() == 0 || p.Sent() >= 1<<40 {
		t.Fatalf("sent %d", p.Sent())
	}
	p.Close()
	s.Close(true)
}

func TestIdleConnectionsConnect(t *testing.T) {
	forwarders(t, func(t *testing.T, addr string) {
		conns, err := OpenIdle(context.Background(), addr, "idle", 50, 4)
		if err != nil {
			t.Fatal(err)
		}
		if len(conns) != 50 {
			t.Fatalf("%d connections", len(conns))
		}
		CloseAll(conns)
	})
}

func TestIdleConnectionsReportARefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	if _, err := OpenIdle(context.Background(), addr, "idle", 10, 2); err == nil {
		t.Fatal("no error without a listener")
	}
}

// A subscriber that stops reading makes the epoll forwarder stop reading the
// publishers once the subscriber's output passes the limit: the memory held
// stays bounded, and once the subscriber reads again every message arrives,
// once, in order and intact.
func TestEpollHoldsPublishersWhileASubscriberDoesNotRead(t *testing.T) {
	addr, e := startEpoll(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const npub, per = 2, 250_000
	s, err := DialSubscriber(ctx, SubscriberConfig{Addr: addr, ClientID: "slow", Clean: true, Filters: []string{"t"}, Publishers: npub})
	if err != nil {
		t.Fatal(err)
	}
	var pubs []*Publisher
	for i := 0; i < npub; i++ {
		p, err := DialPublisher(ctx, PublisherConfig{Addr: addr, ClientID: fmt.Sprintf("p%d", i), ID: uint32(i), Topics: []string{"t"}, Max: per})
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, p)
	}
	stop := make(chan struct{})
	done := make(chan error, npub)
	for _, p := range pubs {
		go func() { done <- p.Run(stop, time.Now().Add(60*time.Second)) }()
	}
	size := uint64(len(wire.AppendPublish(nil, "t", 0, 0, make([]byte, PayloadSize))))
	total := npub * per * size

	// Wait until the publishers are paused and the forwarder has stopped
	// taking their bytes.
	var st forward.EpollStats
	stable, last := 0, uint64(0)
	for deadline := time.Now().Add(30 * time.Second); stable < 30; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			close(stop)
			t.Fatalf("publishers never held: %v", e.Stats())
		}
		st = e.Stats()
		if st.PausedNow && st.PubBytesIn == last {
			stable++
		} else {
			stable = 0
		}
		last = st.PubBytesIn
	}
	if st.PubBytesIn >= total {
		t.Errorf("forwarder read all %d bytes the publishers sent while the subscriber read nothing: %v", total, st)
	}
	if st.PeakPending <= st.PendingLimit || st.PeakPending > st.PendingLimit+320<<10 {
		t.Errorf("peak waiting for the subscriber %d bytes, want just over the limit %d", st.PeakPending, st.PendingLimit)
	}
	sent := uint64(0)
	for _, p := range pubs {
		sent += p.Sent() * size
	}
	t.Logf("held: %v; publishers had written %d of %d bytes", st, sent, total)

	go s.Run()
	for range pubs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(60 * time.Second); s.Unique() < npub*per && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	if err := s.Close(true); err != nil {
		t.Errorf("subscriber: %v", err)
	}
	for _, p := range pubs {
		if p.Sent() != per {
			t.Errorf("publisher sent %d of %d", p.Sent(), per)
		}
		if err := p.Close(); err != nil {
			t.Errorf("publisher: %v", err)
		}
	}
	if v := s.V; v.Unique != npub*per || v.Received != npub*per || v.Dups+v.Reordered+v.Corrupt+v.Misrouted != 0 {
		t.Errorf("want %d, got received %d unique %d dup %d reordered %d corrupt %d misrouted %d",
			npub*per, v.Received, v.Unique, v.Dups, v.Reordered, v.Corrupt, v.Misrouted)
	}
	if st := e.Stats(); st.PausedNow || st.Pauses == 0 {
		t.Errorf("after draining: %v, paused now %v", st, st.PausedNow)
	}
}
