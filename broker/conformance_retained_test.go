package broker_test

import (
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// A retained message is stored per topic and sent to every new subscription
// with RETAIN 1 [MQTT-3.3.1-6], [MQTT-3.3.1-8]; a newer retained message
// replaces it [MQTT-3.3.1-5]; a retained message with an empty payload clears
// it and is not stored [MQTT-3.3.1-10], [MQTT-3.3.1-11].
func TestConformanceRetainedSetReplaceClear(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	pub := dialV3(t, b, "retainer", 4, true)
	n := 0
	// newSubscriber subscribes a fresh client to the retained topic and a
	// fence topic and returns what it received before the fence.
	newSubscriber := func(level uint) []message {
		t.Helper()
		n++
		id := fmt.Sprintf("late-%d", n)
		var in *inbox
		if level == 5 {
			c, _ := dialV5(t, b, &paho.Connect{ClientID: id, CleanStart: true})
			c.sub1(t, "fence/"+id, 0)
			c.sub1(t, "ret/+", 1)
			in = c.in
		} else {
			c := dialV3(t, b, id, level, true)
			c.sub(t, "fence/"+id, 0)
			c.sub(t, "ret/+", 1)
			in = c.in
		}
		pub.pub(t, "fence/"+id, 0, false, "fence")
		in.waitPayload(t, "fence")
		var got []message
		for _, m := range in.all() {
			if m.Topic != "fence/"+id {
				got = append(got, m)
			}
		}
		return got
	}

	pub.pub(t, "ret/t", 1, true, "v1")
	for _, level := range []uint{3, 4, 5} {
		got := newSubscriber(level)
		if len(got) != 1 || got[0].Payload != "v1" || !got[0].Retain || got[0].Topic != "ret/t" {
			t.Errorf("level %d subscriber after retaining v1 received %v, want exactly [ret/t \"v1\" retain=true]", level, got)
		}
	}

	pub.pub(t, "ret/t", 1, true, "v2")
	got := newSubscriber(4)
	if len(got) != 1 || got[0].Payload != "v2" || !got[0].Retain {
		t.Errorf("subscriber after retaining v2 over v1 received %v, want only [ret/t \"v2\" retain=true]", got)
	}

	pub.pub(t, "ret/t", 0, false, "not retained")
	// The broker handles one connection's packets in order: once this
	// QoS 1 publish is acknowledged, the QoS 0 one before it has been
	// routed, so the next subscriber cannot receive it live.
	pub.pub(t, "sync/retainer", 1, false, "sync")
	got = newSubscriber(4)
	if len(got) != 1 || got[0].Payload != "v2" {
		t.Errorf("a non-retained publish changed the retained message: new subscriber received %v, want only \"v2\"", got)
	}

	pub.pub(t, "ret/t", 1, true, "")
	got = newSubscriber(4)
	if len(got) != 0 {
		t.Errorf("after a retained publish with an empty payload, a new subscriber received %v, want nothing (retained message cleared)", got)
	}
	got = newSubscriber(5)
	if len(got) != 0 {
		t.Errorf("after clearing, a new v5 subscriber received %v, want nothing", got)
	}
}

// Retained messages at QoS 2 are delivered at the subscription's QoS, and a
// retained message on each of several topics is sent for a wildcard
// subscription.
func TestConformanceRetainedWildcardAndQoS(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	pub := dialV3(t, b, "retainer", 4, true)
	pub.pub(t, "rw/a", 2, true, "a")
	pub.pub(t, "rw/b", 1, true, "b")
	pub.pub(t, "rw/c/d", 0, true, "cd")

	sub := dialV3(t, b, "sub", 4, true)
	sub.sub(t, "rw/+", 1)
	a := sub.in.waitPayload(t, "a")
	bm := sub.in.waitPayload(t, "b")
	if a.QoS != 1 || bm.QoS != 1 {
		t.Errorf("retained QoS 2 and QoS 1 messages through a QoS 1 subscription arrived at QoS %d and %d, want 1 and 1", a.QoS, bm.QoS)
	}
	sub.sub(t, "rw/#", 0)
	cd := sub.in.waitPayload(t, "cd")
	if !cd.Retain || cd.QoS != 0 {
		t.Errorf("retained rw/c/d via rw/#: %v, want retain=true qos 0", cd)
	}
}
