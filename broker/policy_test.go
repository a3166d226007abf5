package broker_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"gatewayd/broker"
	"gatewayd/broker/client"
	"gatewayd/broker/packet"
)

// policyQueue fills the queue of an offline persistent session "sink" that
// has policy p with msgs (QoS 1 unless qos0), then reconnects it and returns
// the payloads it receives (count want) and the queue stats before that.
func policyQueue(t *testing.T, p broker.ClientPolicy, msgs int, qos byte, want int) ([]string, broker.ClientQueueStats) {
	t.Helper()
	b := startBroker(t, nil, broker.Options{})
	b.SetClientPolicy("sink", p)
	sink := dialV3(t, b, "sink", 4, false)
	sink.sub(t, "q/#", 1)
	sink.Disconnect(100)
	waitOffline(t, b, 1)
	pub := dialV3(t, b, "pub", 4, true)
	for i := range msgs {
		pub.pub(t, "q/x", qos, false, fmt.Sprint(i))
	}
	st, ok := b.ClientQueue("sink")
	if !ok {
		t.Fatal("ClientQueue: no session or policy for sink")
	}
	sink = dialV3(t, b, "sink", 4, false)
	var got []string
	for _, m := range sink.in.waitCount(t, "queued messages", want, func(message) bool { return true }) {
		got = append(got, m.Payload)
	}
	return got, st
}

func TestClientPolicyDropOldestCountsEachDrop(t *testing.T) {
	got, st := policyQueue(t, broker.ClientPolicy{MaxQueuedMessages: 3, DropOldest: true}, 5, 1, 3)
	if !slices.Equal(got, []string{"2", "3", "4"}) {
		t.Errorf("delivered %v, want the newest 3", got)
	}
	if st.DroppedOldest != 2 || st.RejectedFull != 0 || st.Messages != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestClientPolicyRejectNewCountsEachRefusal(t *testing.T) {
	got, st := policyQueue(t, broker.ClientPolicy{MaxQueuedMessages: 3}, 5, 1, 3)
	if !slices.Equal(got, []string{"0", "1", "2"}) {
		t.Errorf("delivered %v, want the oldest 3", got)
	}
	if st.RejectedFull != 2 || st.DroppedOldest != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestClientPolicyBytesBound(t *testing.T) {
	// Each message counts topic + payload + 64 bytes: 3 fit in 210.
	_, st := policyQueue(t, broker.ClientPolicy{MaxQueuedBytes: 210, DropOldest: true}, 5, 1, 3)
	if st.DroppedOldest != 2 || st.Messages != 3 || st.Bytes > 210 {
		t.Errorf("stats %+v", st)
	}
}

func TestClientPolicyQueuesQoS0WhileOffline(t *testing.T) {
	// QoS 0 to an offline session is normally not kept at all.
	got, _ := policyQueue(t, broker.ClientPolicy{UpgradeQoS: true}, 4, 0, 4)
	if !slices.Equal(got, []string{"0", "1", "2", "3"}) {
		t.Errorf("QoS 0 while offline: delivered %v, want all 4 queued", got)
	}
}

func TestClientPolicyMaxAge(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	b.SetClientPolicy("sink", broker.ClientPolicy{MaxAge: 200 * time.Millisecond})
	sink := dialV3(t, b, "sink", 4, false)
	sink.sub(t, "q/#", 1)
	sink.Disconnect(100)
	waitOffline(t, b, 1)
	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "q/x", 1, false, "old")
	for {
		st, _ := b.ClientQueue("sink")
		if !st.Oldest.IsZero() && time.Since(st.Oldest) > 300*time.Millisecond {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	pub.pub(t, "q/x", 1, false, "new")
	if st, _ := b.ClientQueue("sink"); st.Expired != 1 || st.Messages != 1 {
		t.Errorf("stats %+v", st)
	}
	sink = dialV3(t, b, "sink", 4, false)
	sink.in.waitPayload(t, "new")
	if n := len(sink.in.withPayload("old")); n != 0 {
		t.Errorf("expired message delivered %d times", n)
	}
}

// KeepSession exempts the session of an in-process client from
// max_session_expiry (here 0: every session would end with its
// connection); a client with the same identifier connecting through a
// listener stays capped.
func TestClientPolicyKeepSessionInProcessOnly(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaxSessionExpiry = 0 }, broker.Options{})
	b.SetClientPolicy("keeper", broker.ClientPolicy{KeepSession: true})
	var wg sync.WaitGroup
	defer wg.Wait()
	inProcess := func(context.Context) (net.Conn, error) {
		a, s := net.Pipe()
		wg.Go(func() { b.ServeConn(s, "in-process") })
		return a, nil
	}
	session := func(o client.Options) {
		t.Helper()
		o.ClientID, o.Protocol, o.SessionExpiry = "keeper", packet.V5, time.Hour
		c, err := client.New(o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := contextWithTimeout()
		defer cancel()
		if err := c.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Subscribe(ctx, func(*client.Message) {}, client.Subscription{Filter: "q/#", QoS: 1}); err != nil {
			t.Fatal(err)
		}
		if err := c.Disconnect(ctx); err != nil {
			t.Fatal(err)
		}
	}

	session(client.Options{Dialer: inProcess})
	waitOffline(t, b, 1)
	if subs := b.ClientSubscriptions("keeper"); len(subs) != 1 {
		t.Fatalf("in-process client: session subscriptions %v after it left, want its session kept", subs)
	}

	session(client.Options{URL: "mqtt://" + b.addr})
	deadline := time.Now().Add(waitTimeout)
	for len(b.ClientSubscriptions("keeper")) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("network client: session kept after it left, want it ended (max_session_expiry 0)")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
