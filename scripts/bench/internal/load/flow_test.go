package load

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"gatewayd/scripts/bench/internal/forward"
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
	c := flowCase{pubs: 3, subs: 1, per: 5000}
	subs, pubs := runFlow(t, startForwarder(t), c)
	checkAllDelivered(t, subs, pubs, c)
}

func TestQoS0FanOutReachesEverySubscriber(t *testing.T) {
	c := flowCase{pubs: 1, subs: 4, per: 3000}
	subs, pubs := runFlow(t, startForwarder(t), c)
	checkAllDelivered(t, subs, pubs, c)
}

func TestQoS1PublishersGetEveryPubackWithAWindow(t *testing.T) {
	c := flowCase{pubs: 2, subs: 1, qos: 1, per: 3000}
	subs, pubs := runFlow(t, startForwarder(t), c)
	checkAllDelivered(t, subs, pubs, c)
}

func TestPacedPublisherSendsItsCount(t *testing.T) {
	c := flowCase{pubs: 2, subs: 1, rate: 2000, per: 200}
	subs, pubs := runFlow(t, startForwarder(t), c)
	checkAllDelivered(t, subs, pubs, c)
}

func TestStopEndsASaturatedPublisher(t *testing.T) {
	addr := startForwarder(t)
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
	conns, err := OpenIdle(context.Background(), startForwarder(t), "idle", 50, 4)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 50 {
		t.Fatalf("%d connections", len(conns))
	}
	CloseAll(conns)
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
