package client

import (
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"gatewayd/broker/packet"
	"gatewayd/internal/testenv"
	"gatewayd/internal/testproxy"
)

// stateLog records OnConnectionChange calls and lets a test wait for one.
type stateLog struct {
	mu      sync.Mutex
	changes []State
	errs    []error
	ch      chan State
}

func newStateLog() *stateLog { return &stateLog{ch: make(chan State, 1000)} }

func (l *stateLog) record(s State, err error) {
	l.mu.Lock()
	l.changes = append(l.changes, s)
	l.errs = append(l.errs, err)
	l.mu.Unlock()
	l.ch <- s
}

// wait returns when the state s has been entered (again).
func (l *stateLog) wait(t *testing.T, s State) {
	t.Helper()
	for {
		select {
		case got := <-l.ch:
			if got == s {
				return
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("state %v never reached", s)
		}
	}
}

func (l *stateLog) lastErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.errs) - 1; i >= 0; i-- {
		if l.errs[i] != nil {
			return l.errs[i]
		}
	}
	return nil
}

var fastBackoff = Backoff{Base: 10 * time.Millisecond, Cap: 200 * time.Millisecond}

func TestReconnectAfterBrokerRestartResubscribes(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			mq := startMosquitto(t, "")
			states := newStateLog()
			got := newCollector()
			c := connect(t, Options{URL: mq.URL(), Protocol: ver.v, ClientID: "bridge", CleanStart: true,
				AutoReconnect: true, Backoff: fastBackoff, OnConnectionChange: states.record})
			if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "cmd/#", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			mq.Stop()
			states.wait(t, StateDisconnected)
			// Published while the broker is down: queued, sent after the
			// reconnection, acknowledged then.
			done := make(chan error, 1)
			c.PublishAsync(&Message{Topic: "cmd/queued", Payload: []byte("while down"), QoS: 1}, func(err error) { done <- err })
			mq.Start()
			states.wait(t, StateConnected)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// The subscription was renewed (mosquitto kept no session), so
			// the queued message came back to us through it.
			if m := got.next(t); m.Topic != "cmd/queued" {
				t.Fatalf("got %+v", m)
			}
			other := connect(t, Options{URL: mq.URL(), Protocol: ver.v, CleanStart: true})
			if err := other.Publish(testCtx(t), &Message{Topic: "cmd/after", Payload: []byte("x"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if m := got.next(t); m.Topic != "cmd/after" {
				t.Fatalf("got %+v", m)
			}
		})
	}
}

func TestUnackedQoS1ResentWithDupAfterReconnect(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		{
			ver := struct{ v packet.Version }{v}
			px := testproxy.New(t, strings.TrimPrefix(url, "mqtt://"))
			got := newCollector()
			watcher := connect(t, Options{URL: url, Protocol: ver.v, CleanStart: true})
			if _, err := watcher.Subscribe(testCtx(t), got.handle, Subscription{Filter: "dup/#", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			states := newStateLog()
			c := connect(t, Options{URL: px.URL(), Protocol: ver.v, ClientID: "dup-client-" + t.Name(), CleanStart: true,
				SessionExpiry: time.Hour, AutoReconnect: true, Backoff: fastBackoff, OnConnectionChange: states.record})
			if v := ver.v; v == packet.V311 {
				// 3.1.1 keeps the session only with the clean session flag off.
				c.Disconnect(testCtx(t))
				c = connect(t, Options{URL: px.URL(), Protocol: v, ClientID: "dup-client-" + t.Name(), AutoReconnect: true,
					Backoff: fastBackoff, OnConnectionChange: states.record})
			}
			px.SetDrop(func(t packet.Type) bool { return t == packet.PUBACK })
			done := make(chan error, 1)
			c.PublishAsync(&Message{Topic: "dup/x", Payload: []byte("once"), QoS: 1}, func(err error) { done <- err })
			<-px.Dropped()
			px.SetDrop(nil)
			px.Cut(false)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-testCtx(t).Done():
				t.Fatal("publish never acknowledged after the reconnection")
			}
			pubs := px.Sent(packet.PUBLISH)
			if len(pubs) != 2 || pubs[0].Header.Flags&0x08 != 0 || pubs[1].Header.Flags&0x08 == 0 || pubs[0].ID() != pubs[1].ID() {
				t.Fatalf("client sent %d PUBLISH %+v, want the message then its DUP with the same id", len(pubs), pubs)
			}
			if m := got.next(t); string(m.Payload) != "once" {
				t.Fatalf("got %+v", m)
			}
		}
	})
}

func TestQoS2ResumesWithPubrelAfterReconnect(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		{
			ver := struct{ v packet.Version }{v}
			px := testproxy.New(t, strings.TrimPrefix(url, "mqtt://"))
			got := newCollector()
			watcher := connect(t, Options{URL: url, Protocol: ver.v, CleanStart: true})
			if _, err := watcher.Subscribe(testCtx(t), got.handle, Subscription{Filter: "q2/#", QoS: 2}); err != nil {
				t.Fatal(err)
			}
			opts := Options{URL: px.URL(), Protocol: ver.v, ClientID: "q2-client-" + t.Name(), SessionExpiry: time.Hour,
				AutoReconnect: true, Backoff: fastBackoff}
			c := connect(t, opts)
			back := newCollector()
			if _, err := c.Subscribe(testCtx(t), back.handle, Subscription{Filter: "q2back/#", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			px.SetDrop(func(t packet.Type) bool { return t == packet.PUBCOMP })
			done := make(chan error, 1)
			c.PublishAsync(&Message{Topic: "q2/x", Payload: []byte("exactly once"), QoS: 2}, func(err error) { done <- err })
			<-px.Dropped()
			px.SetDrop(nil)
			px.Cut(false)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if n := len(px.Sent(packet.PUBLISH)); n != 1 {
				t.Fatalf("PUBLISH sent %d times; after PUBREC only PUBREL is resent", n)
			}
			rels := px.Sent(packet.PUBREL)
			if len(rels) != 2 || rels[0].ID() != rels[1].ID() {
				t.Fatalf("PUBREL sent %d times, want twice with the same id", len(rels))
			}
			if m := got.next(t); string(m.Payload) != "exactly once" {
				t.Fatalf("got %+v", m)
			}
			// The session was resumed: the subscription was kept by the
			// server, not sent again.
			if n := len(px.Sent(packet.SUBSCRIBE)); n != 1 {
				t.Fatalf("SUBSCRIBE sent %d times; a resumed session keeps subscriptions", n)
			}
			if err := watcher.Publish(testCtx(t), &Message{Topic: "q2back/x", Payload: []byte("kept"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if m := back.next(t); string(m.Payload) != "kept" {
				t.Fatalf("got %+v", m)
			}
			// Exactly once: nothing else arrives before a later marker.
			c.Publish(testCtx(t), &Message{Topic: "q2/marker", QoS: 2})
			if m := got.next(t); m.Topic != "q2/marker" {
				t.Fatalf("got %s %q twice", m.Topic, m.Payload)
			}
		}
	})
}

func TestPingTimeoutDeclaresConnectionDead(t *testing.T) {
	mq := startMosquitto(t, "")
	px := testproxy.New(t, mq.Addr())
	states := newStateLog()
	connect(t, Options{URL: px.URL(), KeepAlive: time.Second, PingTimeout: time.Second, OnConnectionChange: states.record})
	// The server goes silent: nothing it sends gets through.
	px.SetDrop(func(packet.Type) bool { return true })
	states.wait(t, StateDisconnected)
	if err := states.lastErr(); !errors.Is(err, ErrPingTimeout) {
		t.Fatalf("connection ended with %v, want ErrPingTimeout", err)
	}
	if n := len(px.Sent(packet.PINGREQ)); n == 0 {
		t.Fatal("no PINGREQ sent")
	}
}

func TestKeepAliveKeepsIdleConnection(t *testing.T) {
	mq := startMosquitto(t, "")
	px := testproxy.New(t, mq.Addr())
	states := newStateLog()
	connect(t, Options{URL: px.URL(), KeepAlive: time.Second, OnConnectionChange: states.record})
	// Wait for two PINGREQs answered; the connection stays up.
	ctx := testCtx(t)
	for len(px.Sent(packet.PINGREQ)) < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("fewer than two PINGREQ sent")
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case s := <-states.ch:
		if s != StateConnecting && s != StateConnected {
			t.Fatalf("state changed to %v: %v", s, states.lastErr())
		}
	default:
	}
}

// TestBackoffFullJitter starts 100 clients against a port that refuses
// connections and checks the waits they draw before retrying: spread over
// [0, min(cap, base*2^n)], averaging about half the bound, not in lockstep.
func TestBackoffFullJitter(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := "mqtt://" + l.Addr().String()
	l.Close()

	const clients, attempts = 100, 4
	bo := Backoff{Base: 4 * time.Millisecond, Cap: 20 * time.Millisecond}
	var mu sync.Mutex
	waits := make([][]time.Duration, attempts)
	var wg sync.WaitGroup
	for range clients {
		ctx, cancel := context.WithCancel(context.Background())
		var seen int
		c, err := New(Options{URL: refusing, AutoReconnect: true, Backoff: bo,
			OnReconnectWait: func(n int, d time.Duration) {
				mu.Lock()
				defer mu.Unlock()
				if n < attempts {
					waits[n] = append(waits[n], d)
				}
				if seen++; seen == attempts {
					cancel()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			if err := c.Connect(ctx); !errors.Is(err, context.Canceled) {
				t.Errorf("Connect to a refusing port: %v", err)
			}
		}()
	}
	wg.Wait()
	for n, ws := range waits {
		bound := bo.Bound(n)
		if want := min(bo.Cap, bo.Base<<n); bound != want {
			t.Fatalf("bound %d = %v, want %v", n, bound, want)
		}
		if len(ws) != clients {
			t.Fatalf("attempt %d: %d waits, want %d", n, len(ws), clients)
		}
		distinct := map[time.Duration]bool{}
		var sum float64
		for _, d := range ws {
			if d < 0 || d > bound {
				t.Fatalf("attempt %d: wait %v outside [0, %v]", n, d, bound)
			}
			distinct[d] = true
			sum += float64(d)
		}
		// The mean of 100 uniform draws on [0, b] is b/2 with a standard
		// deviation of b/sqrt(1200) ≈ 0.029 b: 0.35..0.65 is > 5 sigma.
		mean := sum / clients / float64(bound)
		if mean < 0.35 || mean > 0.65 {
			t.Errorf("attempt %d: mean wait %.2f of the bound, want about 0.5", n, mean)
		}
		if len(distinct) < clients*9/10 {
			t.Errorf("attempt %d: only %d distinct waits among %d clients", n, len(distinct), clients)
		}
		// Spread: each quarter of [0, bound] gets some clients.
		var quarters [4]int
		for _, d := range ws {
			quarters[min(3, int(4*float64(d)/float64(bound)))]++
		}
		for q, k := range quarters {
			if k < 5 {
				t.Errorf("attempt %d: quarter %d of the range holds %d of %d waits", n, q, k, clients)
			}
		}
	}
}

func TestBackoffBound(t *testing.T) {
	bo := Backoff{Base: time.Second, Cap: time.Minute}
	for n, want := range []time.Duration{1, 2, 4, 8, 16, 32, 60, 60} {
		if got := bo.Bound(n); got != want*time.Second {
			t.Errorf("Bound(%d) = %v, want %v s", n, got, want)
		}
	}
	if got := bo.Bound(math.MaxInt32); got != time.Minute {
		t.Errorf("Bound(huge) = %v", got)
	}
	if got := (Backoff{}).Bound(0); got != time.Second {
		t.Errorf("zero Backoff Bound(0) = %v, want the 1 s default", got)
	}
}

// TestSlowHandlerDoesNotLookLikeDeadServer blocks the handler while messages
// pile up behind it for longer than the ping timeout: the PINGRESP is stuck
// behind them, but the connection must stay up.
func TestSlowHandlerDoesNotLookLikeDeadServer(t *testing.T) {
	mq := startMosquitto(t, "")
	states := newStateLog()
	release := make(chan struct{})
	got := make(chan string, 1000)
	c := connect(t, Options{URL: mq.URL(), KeepAlive: time.Second, PingTimeout: time.Second, CleanStart: true,
		OnConnectionChange: states.record})
	if _, err := c.Subscribe(testCtx(t), func(m *Message) {
		<-release
		got <- string(m.Payload)
	}, Subscription{Filter: "slow"}); err != nil {
		t.Fatal(err)
	}
	pub := connect(t, Options{URL: mq.URL(), CleanStart: true})
	// QoS 0, which the server does not hold back for acknowledgements: more
	// than the handler queue holds.
	const n = 150
	for i := range n {
		if err := pub.Publish(testCtx(t), &Message{Topic: "slow", Payload: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	// Several keepalive periods with the reader stuck behind the handler.
	time.Sleep(4 * time.Second)
	if s := c.State(); s != StateConnected {
		t.Fatalf("state %v: %v", s, states.lastErr())
	}
	close(release)
	for i := range n {
		select {
		case p := <-got:
			if p[0] != byte(i) {
				t.Fatalf("message %d is %d", i, p[0])
			}
		case <-testCtx(t).Done():
			t.Fatalf("%d of %d messages", i, n)
		}
	}
	if s := c.State(); s != StateConnected {
		t.Fatalf("state %v: %v", s, states.lastErr())
	}
}

// TestUnackedResentAsNewWhenSessionLost: the server kept no session, so a
// QoS 1 message it never acknowledged is sent again as a new message.
func TestUnackedResentAsNewWhenSessionLost(t *testing.T) {
	forEach(t, func(t *testing.T, url string, v packet.Version) {
		px := testproxy.New(t, strings.TrimPrefix(url, "mqtt://"))
		got := newCollector()
		watcher := connect(t, Options{URL: url, Protocol: v, CleanStart: true})
		if _, err := watcher.Subscribe(testCtx(t), got.handle, Subscription{Filter: "lost/#", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		c := connect(t, Options{URL: px.URL(), Protocol: v, ClientID: "lost-" + t.Name(), CleanStart: true,
			AutoReconnect: true, Backoff: fastBackoff})
		px.SetDrop(func(t packet.Type) bool { return t == packet.PUBACK })
		done := make(chan error, 1)
		c.PublishAsync(&Message{Topic: "lost/x", Payload: []byte("again"), QoS: 1}, func(err error) { done <- err })
		<-px.Dropped()
		px.SetDrop(nil)
		px.Cut(false)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if c.Server().SessionPresent {
			t.Fatal("session present after a clean start without expiry")
		}
		pubs := px.Sent(packet.PUBLISH)
		if len(pubs) != 2 || pubs[1].Header.Flags&0x08 != 0 {
			t.Fatalf("client sent %d PUBLISH, want the message then a fresh copy (no DUP)", len(pubs))
		}
		// Delivered (once or twice: QoS 1 is at least once).
		if m := got.next(t); string(m.Payload) != "again" {
			t.Fatalf("got %+v", m)
		}
	})
}

// The broker lost the session, so the client subscribed again on its own,
// and the link failed at that SUBSCRIBE. The connection after it finds the
// session that the failed one made, without the subscription: the client
// subscribes again all the same, and messages reach the handler.
func TestResubscriptionLostWithLinkIsSentAgain(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			mq := startMosquitto(t, "")
			px := testproxy.New(t, mq.Addr())
			states := newStateLog()
			got := newCollector()
			c := connect(t, Options{URL: px.URL(), Protocol: ver.v, ClientID: "resub", SessionExpiry: time.Hour,
				AutoReconnect: true, Backoff: fastBackoff, OnConnectionChange: states.record})
			if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "cmd/#", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			px.DropSubscribes(1)
			mq.Stop() // no persistence: the session is gone
			states.wait(t, StateDisconnected)
			mq.Start()
			// No session: the client subscribes again, and the proxy closes
			// the link at that SUBSCRIBE.
			states.wait(t, StateConnected)
			states.wait(t, StateDisconnected)
			states.wait(t, StateConnected)
			if !c.Server().SessionPresent {
				t.Fatal("the last connection found no session; want the one the failed connection made")
			}
			// mosquitto drops what matches no subscription: publish until one
			// arrives.
			other := connect(t, Options{URL: mq.URL(), Protocol: ver.v, CleanStart: true})
			deadline := time.Now().Add(testenv.Scale(10 * time.Second))
			for i := 0; ; i++ {
				if err := other.Publish(testCtx(t), &Message{Topic: "cmd/probe", Payload: []byte("x"), QoS: 1}); err != nil {
					t.Fatal(err)
				}
				select {
				case m := <-got:
					if m.Topic != "cmd/probe" {
						t.Fatalf("got %+v", m)
					}
					if n := len(px.Sent(packet.SUBSCRIBE)); n != 3 {
						t.Fatalf("client sent %d SUBSCRIBE, want 3 (the first, the one cut, the one after)", n)
					}
					return
				case <-time.After(50 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("no message reached the handler in %v (%d published)", testenv.Scale(10*time.Second), i+1)
				}
			}
		})
	}
}
