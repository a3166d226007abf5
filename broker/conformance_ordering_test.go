package broker_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"gatewayd/broker"
)

// A new subscription to a topic whose retained value keeps changing never
// gets an older retained value after a newer live one on that topic: each
// topic is an ordered topic [MQTT-4.6.0-6], and a subscriber to a state
// topic must end up with the latest state, not the one it replaced.
func TestConformanceRetainedNotStaleAfterLiveOnSubscribe(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	pub := dialRaw(t, b, "state publisher")
	pub.connect(connectSpec{Version: 4, ClientID: "state-pub", Clean: true, KeepAlive: 30})
	stop := make(chan struct{})
	done := make(chan struct{})
	var published atomic.Int64
	// The first value is retained before anyone subscribes (QoS 1: the
	// PUBACK says it is stored), so every subscription below has a retained
	// copy to receive, however late the publisher's loop gets going.
	pub.send(publishPacket(false, pubSpec{Topic: "state/t", QoS: 1, ID: 1, Retain: true, Payload: "0"}))
	pub.expect(tPUBACK)
	go func() {
		defer close(done)
		for n := 1; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if pub.trySend(publishPacket(false, pubSpec{Topic: "state/t", Retain: true, Payload: strconv.Itoa(n)})) != nil {
				return
			}
			published.Store(int64(n))
			if n%10 == 0 { // slow enough that the subscriber keeps up (no QoS 0 drops)
				time.Sleep(time.Millisecond)
			}
		}
	}()
	defer func() { close(stop); <-done }()

	c := dialRaw(t, b, "subscriber")
	c.connect(connectSpec{Version: 4, ClientID: "state-sub", Clean: true, KeepAlive: 30})
	stale := 0
	const cycles = 1000 // the window is narrow: give it many chances
	for cycle := 0; cycle < cycles; cycle++ {
		c.send(subscribePacket(false, 1, nil, rawSub{Filter: "state/t", Options: 0}))
		// Live messages may come before SUBACK (section 3.8.4): the
		// subscription exists from when the broker adds it.
		maxLive, live := -1, 0
		for {
			raw := c.expectAny()
			if raw.Type == tSUBACK {
				continue
			}
			if raw.Type != tPUBLISH {
				t.Fatalf("unexpected %v", raw)
			}
			p, _ := raw.publish(false)
			v, _ := strconv.Atoi(p.Payload)
			if !p.Retain {
				maxLive = max(maxLive, v)
				live++
				if live > 5000 {
					t.Fatalf("cycle %d: %d live messages after SUBSCRIBE and no retained copy (RETAIN 1) yet", cycle, live)
				}
				continue
			}
			if v < maxLive {
				stale++
				if stale == 1 {
					t.Errorf("cycle %d: retained value %d arrived after live value %d on a new subscription: the subscriber ends with stale state", cycle, v, maxLive)
				}
			}
			break
		}
		c.send(pkt(0xA2, u16(2), str("state/t")))
		for {
			p, err := c.next(waitTimeout)
			if err != nil {
				t.Fatalf("waiting for UNSUBACK: %v", err)
			}
			if p.Type == tUNSUBACK {
				break
			}
		}
	}
	if stale > 0 {
		t.Errorf("%d of %d subscriptions saw an older retained value after a newer live one", stale, cycles)
	}
	t.Logf("publisher sent %d values", published.Load())
}
