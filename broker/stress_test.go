package broker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
)

// TestConcurrentPublishersSubscribers: several publishers and subscribers at
// once, QoS 1, with a client id being taken over again and again on the
// side; every subscriber gets every message exactly once per publisher
// sequence (the race detector watches the locking).
func TestConcurrentPublishersSubscribers(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	const pubs, subs, per = 4, 4, 100
	var got []*received
	for i := range subs {
		c, r := v3(t, addr, fmt.Sprintf("sub%d", i), 4, true)
		v3sub(t, c, "load/#", 1)
		got = append(got, r)
	}
	stop := make(chan struct{})
	var churn sync.WaitGroup
	churn.Add(1)
	go func() {
		defer churn.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			opts := mqtt.NewClientOptions().AddBroker("tcp://"+addr).SetClientID("churn").
				SetCleanSession(false).SetAutoReconnect(false).SetWill("load/will", "x", 0, false)
			c := mqtt.NewClient(opts)
			if tok := c.Connect(); tok.WaitTimeout(wait) && tok.Error() == nil {
				c.Subscribe("load/#", 1, nil).WaitTimeout(wait)
				c.Disconnect(0)
			}
		}
	}()
	var wg sync.WaitGroup
	for p := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := v3(t, addr, fmt.Sprintf("pub%d", p), 4, true)
			for i := range per {
				tok := c.Publish(fmt.Sprintf("load/%d", p), 1, false, fmt.Sprint(i))
				if !tok.WaitTimeout(wait) || tok.Error() != nil {
					t.Errorf("publish: %v", tok.Error())
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	churn.Wait()
	for i, r := range got {
		msgs := r.waitN(t, pubs*per)
		next := map[string]int{}
		for _, m := range msgs {
			if m.Topic == "load/will" {
				continue
			}
			if m.Payload != fmt.Sprint(next[m.Topic]) {
				t.Fatalf("subscriber %d on %s: got %s, want %d (lost, duplicated or reordered)", i, m.Topic, m.Payload, next[m.Topic])
			}
			next[m.Topic]++
		}
	}
}

// TestExpiredMessagesLeaveQueue: a queued message whose expiry passed is
// dropped when its turn comes, and counted.
func TestExpiredMessagesLeaveQueue(t *testing.T) {
	s := &Server{cfg: Config{}}
	se := &session{id: "x", subs: map[string]state.Subscription{}}
	tx := s.begin()
	old := &message{}
	old.Topic, old.Expiry = "t", time.Now().Add(-time.Second)
	old.build()
	s.enqueueLocked(se, &outbound{msg: old, qos: 1}, &tx)
	// Bring the session online on a connection nobody reads.
	c := &conn{s: s, closed: true}
	se.conn, se.window = c, 10
	s.pumpLocked(se, &tx)
	if se.queueLen() != 0 || s.stats.expired.Load() != 1 || s.stats.dropped.Load() != 1 {
		t.Fatalf("queue %d, expired %d", se.queueLen(), s.stats.expired.Load())
	}
}

// TestDelayedWillSurvivesRestart: a delayed will of a persistent session
// pending at shutdown is kept by the store and published by the next server
// when it is due; an inbound QoS 2 id awaiting PUBREL is kept too.
func TestDelayedWillSurvivesRestart(t *testing.T) {
	ts := newTestStore()
	s1, addr := startServer(t, nil, Options{Store: ts})
	c := dialRaw(t, addr, packet.V5)
	c.connect(rawConnect{id: "w", clean: true, expiry: 3600, will: "will/w", willPayload: "late", willDelay: 1, willRetain: true}.packet())
	c.publish("q2", 2, false, 11, "x")
	c.nextAck(packet.PUBREC)
	shutdown(t, s1)
	ts.mu.Lock()
	nWills := len(ts.snap.Wills)
	ts.mu.Unlock()
	if nWills != 1 {
		t.Fatalf("%d wills stored", nWills)
	}

	_, addr2 := startServer(t, nil, Options{Store: ts})
	// Retained, so the order of this subscription and the will's timer
	// does not matter.
	watcher := dialRaw(t, addr2, packet.V5)
	watcher.mustConnect("watcher", true)
	watcher.subscribe(1, "will/#", 0)
	if m := watcher.nextPublish(); string(m.Payload) != "late" {
		t.Fatalf("will %q", m.Payload)
	}
	c2 := dialRaw(t, addr2, packet.V5)
	if ack := c2.connect(rawConnect{id: "w", expiry: 3600}.packet()); !ack.SessionPresent {
		t.Fatal("session lost")
	}
	c2.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 11})
	if a := c2.nextAck(packet.PUBCOMP); a.Reason != packet.Success {
		t.Fatalf("PUBCOMP %#x: inbound QoS 2 id not restored", a.Reason)
	}
}
