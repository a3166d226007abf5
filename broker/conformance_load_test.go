package broker_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gatewayd/broker"
)

// Many publishers and subscribers at once: every QoS 1 message reaches every
// subscriber exactly once, and messages from one publisher on one topic keep
// their order (section 4.6, ordered topics).
func TestConformanceConcurrentClientsQoS1NoLossInOrder(t *testing.T) {
	const pubs, msgs, subs = 6, 40, 3
	b := startBroker(t, nil, broker.Options{})
	subscribers := make([]*v3Client, subs)
	for i := range subscribers {
		subscribers[i] = dialV3(t, b, fmt.Sprintf("load-sub-%d", i), 4, true)
		subscribers[i].sub(t, "load/#", 1)
	}
	publishers := make([]*v3Client, pubs)
	for i := range publishers {
		publishers[i] = dialV3(t, b, fmt.Sprintf("load-pub-%d", i), 4, true)
	}
	var wg sync.WaitGroup
	errs := make(chan error, pubs)
	for p, c := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range msgs {
				tok := c.Publish(fmt.Sprintf("load/%d", p), 1, false, fmt.Sprintf("%d:%d", p, m))
				if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
					errs <- fmt.Errorf("publisher %d message %d: not acknowledged (%v)", p, m, tok.Error())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, s := range subscribers {
		got := s.in.waitCount(t, fmt.Sprintf("subscriber %d", i), pubs*msgs, nil)
		next := make([]int, pubs)
		for _, m := range got {
			p, n, _ := strings.Cut(m.Payload, ":")
			pi, _ := strconv.Atoi(p)
			ni, _ := strconv.Atoi(n)
			if ni != next[pi] {
				t.Errorf("subscriber %d: from publisher %d got message %d, want %d (lost, duplicated or out of order)", i, pi, ni, next[pi])
				break
			}
			next[pi]++
		}
	}
}

// Many connections racing for one client id: each is taken over by the
// next, and exactly one remains connected [MQTT-3.1.4-2].
func TestConformanceConcurrentTakeoversLeaveOneConnection(t *testing.T) {
	const n = 12
	b := startBroker(t, nil, broker.Options{})
	clients := make([]*rawClient, n)
	for i := range clients {
		clients[i] = dialRaw(t, b, fmt.Sprintf("racer %d", i))
	}
	var wg sync.WaitGroup
	accepted := make([]bool, n)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.trySend(connectPacket(connectSpec{Version: 4, ClientID: "contested", Clean: true, KeepAlive: 30})); err != nil {
				return
			}
			p, err := c.next(waitTimeout)
			accepted[i] = err == nil && p.Type == tCONNACK && string(p.Body) == "\x00\x00"
		}()
	}
	wg.Wait()
	open := 0
	deadline := time.Now().Add(waitTimeout)
	for {
		open = 0
		for i, c := range clients {
			if !accepted[i] {
				continue
			}
			if _, err := c.next(20 * time.Millisecond); isTimeout(err) {
				open++
			} else {
				accepted[i] = false // closed (or sent something): taken over
			}
		}
		if open <= 1 || time.Now().After(deadline) {
			break
		}
	}
	if open != 1 {
		t.Errorf("%d connections with client id %q still open after %d concurrent CONNECTs, want exactly 1", open, "contested", n)
	}
	// The count follows the closes; give it time to settle.
	for got := b.Stats().ClientsConnected; got != 1; got = b.Stats().ClientsConnected {
		if time.Now().After(deadline.Add(waitTimeout)) {
			t.Errorf("Stats().ClientsConnected = %d with one connection open, want 1", got)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
}
