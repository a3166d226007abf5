package broker_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// willWatcher is a v5 subscriber to will/#, so that will properties can be
// read, plus the fence topic will-fence.
func willWatcher(t *testing.T, b *testBroker) *v5Client {
	t.Helper()
	w, _ := dialV5(t, b, &paho.Connect{ClientID: "will-watcher", CleanStart: true})
	w.sub1(t, "will/#", 1)
	w.sub1(t, "will-fence", 0)
	return w
}

// fenceWills publishes to will-fence and waits for it, so that anything the
// broker published before has arrived.
func fenceWills(t *testing.T, b *testBroker, w *v5Client, id string) {
	t.Helper()
	p := dialV3(t, b, "fencer-"+id, 4, true)
	p.pub(t, "will-fence", 1, false, id)
	w.in.waitPayload(t, id)
	p.Disconnect(100)
}

// The will is published when the network connection is closed without
// DISCONNECT [MQTT-3.1.2-8], at every protocol level.
func TestConformanceWillPublishedOnAbnormalDisconnect(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	w := willWatcher(t, b)
	for _, level := range []byte{3, 4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			topic := fmt.Sprintf("will/abnormal/%d", level)
			c := dialRaw(t, b, "client with will")
			c.connect(connectSpec{Version: level, ClientID: fmt.Sprintf("dying-%d", level), Clean: true, KeepAlive: 30,
				Will: &willSpec{Topic: topic, Payload: "offline", QoS: 1}})
			c.close()
			m := w.in.waitFor(t, "will after the connection was dropped", func(m message) bool { return m.Topic == topic })
			if m.Payload != "offline" || m.QoS != 1 {
				t.Errorf("will arrived as %v, want payload \"offline\" qos 1", m)
			}
		})
	}
}

// A DISCONNECT (reason 0x00 in v5) deletes the will without publishing it
// [MQTT-3.1.2-10], [MQTT-3.14.4-3].
func TestConformanceWillNotPublishedOnNormalDisconnect(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	w := willWatcher(t, b)
	for _, level := range []byte{3, 4, 5} {
		c := dialRaw(t, b, "client with will")
		c.connect(connectSpec{Version: level, ClientID: fmt.Sprintf("polite-%d", level), Clean: true, KeepAlive: 30,
			Will: &willSpec{Topic: fmt.Sprintf("will/normal/%d", level), Payload: "offline", QoS: 1}})
		if level == 5 {
			c.send(pkt(0xE0, []byte{0x00}, noProps()))
		} else {
			c.send(pkt(0xE0))
		}
		c.waitClosed("after DISCONNECT")
	}
	fenceWills(t, b, w, "after-normal")
	for _, m := range w.in.all() {
		if m.Topic != "will-fence" {
			t.Errorf("will published after a normal DISCONNECT: %v", m)
		}
	}
}

// v5 DISCONNECT with reason 0x04 Disconnect with Will Message publishes the
// will (section 3.14.2.1).
func TestConformanceWillPublishedOnDisconnectWithWillV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	w := willWatcher(t, b)
	c := dialRaw(t, b, "client with will")
	c.connect(connectSpec{Version: 5, ClientID: "with-will", Clean: true, KeepAlive: 30,
		Will: &willSpec{Topic: "will/0x04", Payload: "asked for", QoS: 1}})
	c.send(pkt(0xE0, []byte{0x04}, noProps()))
	c.waitClosed("after DISCONNECT 0x04")
	w.in.waitFor(t, "will after DISCONNECT 0x04", func(m message) bool { return m.Topic == "will/0x04" && m.Payload == "asked for" })
}

// v5 Will Delay Interval: the will is published once the delay has passed
// after the connection closed [MQTT-3.1.3-9]; reconnecting within the delay
// cancels it.
func TestConformanceWillDelayIntervalV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	w := willWatcher(t, b)
	const delay = time.Second

	t.Run("published after the delay", func(t *testing.T) {
		c := dialRaw(t, b, "delayed will")
		c.connect(connectSpec{Version: 5, ClientID: "delayed", Clean: true, KeepAlive: 30,
			Props: [][]byte{pU32(propSessionExpiry, 60)},
			Will:  &willSpec{Topic: "will/delayed", Payload: "late", QoS: 1, Props: [][]byte{pU32(propWillDelay, uint32(delay/time.Second))}}})
		closed := time.Now()
		c.close()
		m := w.in.waitFor(t, "delayed will", func(m message) bool { return m.Topic == "will/delayed" })
		// A lower bound only: the will must not come before its delay.
		if early := m.Arrived.Sub(closed); early < delay-100*time.Millisecond {
			t.Errorf("will with Will Delay Interval %v arrived %v after the connection closed; it must wait for the delay", delay, early.Round(time.Millisecond))
		}
	})

	t.Run("cancelled by reconnecting", func(t *testing.T) {
		const delay = 2 * time.Second // room to reconnect on a busy machine
		spec := connectSpec{Version: 5, ClientID: "comeback", Clean: false, KeepAlive: 30,
			Props: [][]byte{pU32(propSessionExpiry, 60)},
			Will:  &willSpec{Topic: "will/comeback", Payload: "late", QoS: 1, Props: [][]byte{pU32(propWillDelay, uint32(delay/time.Second))}}}
		c := dialRaw(t, b, "delayed will")
		c.connect(spec)
		c.close()
		c = dialRaw(t, b, "reconnected within the delay")
		spec.Will = nil
		c.connect(spec)
		time.Sleep(delay + time.Second)
		fenceWills(t, b, w, "after-comeback")
		if got := w.in.withPayload("late"); slices.ContainsFunc(got, func(m message) bool { return m.Topic == "will/comeback" }) {
			t.Errorf("will published although the client reconnected within the Will Delay Interval [MQTT-3.1.3-9]: %v", got)
		}
		c.send(pkt(0xE0, []byte{0x00}, noProps()))
	})
}

// v5 will properties are passed on with the will message (section 3.1.3.2).
func TestConformanceWillPropertiesPassedThroughV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	w := willWatcher(t, b)
	c := dialRaw(t, b, "client with will properties")
	c.connect(connectSpec{Version: 5, ClientID: "will-props", Clean: true, KeepAlive: 30,
		Will: &willSpec{Topic: "will/props", Payload: `{"state":"offline"}`, QoS: 1, Props: [][]byte{
			pByte(propPayloadFormat, 1),
			pStr(propContentType, "application/json"),
			pStr(propResponseTopic, "will/reply"),
			pStr(propCorrelationData, "corr-1"),
			pPair("site", "north"),
			pPair("site", "south"),
			pPair("unit", "7"),
		}}})
	c.close()
	m := w.in.waitFor(t, "will with properties", func(m message) bool { return m.Topic == "will/props" })
	p := m.Props
	if p == nil {
		t.Fatalf("will arrived without properties")
	}
	if p.ContentType != "application/json" {
		t.Errorf("will Content Type %q, want application/json", p.ContentType)
	}
	if p.PayloadFormat == nil || *p.PayloadFormat != 1 {
		t.Errorf("will Payload Format Indicator %v, want 1", p.PayloadFormat)
	}
	if p.ResponseTopic != "will/reply" || string(p.CorrelationData) != "corr-1" {
		t.Errorf("will Response Topic %q Correlation Data %q, want will/reply and corr-1", p.ResponseTopic, p.CorrelationData)
	}
	want := paho.UserProperties{{Key: "site", Value: "north"}, {Key: "site", Value: "south"}, {Key: "unit", Value: "7"}}
	if !slices.Equal(p.User, want) {
		t.Errorf("will User Properties %v, want %v in order [MQTT-3.3.2-18]", p.User, want)
	}
}

// v5: when a session takes over a connection with a will (no delay), that
// will is published [MQTT-3.1.4-3].
func TestConformanceWillPublishedOnTakeoverV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	w := willWatcher(t, b)
	first := dialRaw(t, b, "first connection with a will")
	first.connect(connectSpec{Version: 5, ClientID: "taken", Clean: true, KeepAlive: 30,
		Will: &willSpec{Topic: "will/takeover", Payload: "replaced", QoS: 1}})
	second := dialRaw(t, b, "second connection")
	second.connect(connectSpec{Version: 5, ClientID: "taken", Clean: true, KeepAlive: 30})
	got := first.waitClosed("first connection after takeover")
	if len(got) != 1 || got[0].Type != tDISCONNECT || got[0].disconnectReason() != 0x8E {
		t.Errorf("first connection got %s, want DISCONNECT 0x8E Session taken over", describePackets(got))
	}
	w.in.waitFor(t, "will of the connection that was taken over", func(m message) bool { return m.Topic == "will/takeover" })
}

// A will published with its retain flag is retained [MQTT-3.1.2-17].
func TestConformanceWillRetained(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialRaw(t, b, "client with retained will")
	c.connect(connectSpec{Version: 4, ClientID: "retained-will", Clean: true, KeepAlive: 30,
		Will: &willSpec{Topic: "status/node7", Payload: "offline", QoS: 1, Retain: true}})
	w := dialV3(t, b, "watcher", 4, true)
	w.sub(t, "status/+", 1)
	c.close()
	w.in.waitPayload(t, "offline")
	late := dialV3(t, b, "late", 4, true)
	late.sub(t, "status/+", 1)
	if m := late.in.waitPayload(t, "offline"); !m.Retain {
		t.Errorf("will with retain 1 reached a later subscriber with RETAIN 0; want it retained [MQTT-3.1.2-17]")
	}
}

// v5: a will whose delay is longer than the session's expiry is published
// when the session ends [MQTT-3.1.3-9] ("whichever happens first").
func TestConformanceWillPublishedWhenSessionEndsBeforeDelayV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	w := willWatcher(t, b)
	c := dialRaw(t, b, "short session, long will delay")
	c.connect(connectSpec{Version: 5, ClientID: "short-session", Clean: true, KeepAlive: 30,
		Props: [][]byte{pU32(propSessionExpiry, 1)},
		Will:  &willSpec{Topic: "will/session-end", Payload: "session over", QoS: 1, Props: [][]byte{pU32(propWillDelay, 3600)}}})
	c.close()
	w.in.waitFor(t, "will when the 1 s session expired (Will Delay Interval 3600 s)", func(m message) bool { return m.Topic == "will/session-end" })
}

// v5: DISCONNECT can change the Session Expiry Interval (section 3.14.2.2.2):
// setting it to 0 ends a session that CONNECT asked to keep.
func TestConformanceDisconnectEndsSessionWithExpiryZeroV5(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	spec := connectSpec{Version: 5, ClientID: "short-lived", Clean: false, KeepAlive: 30, Props: [][]byte{pU32(propSessionExpiry, 60)}}
	c := dialRaw(t, b, "persistent")
	c.connect(spec)
	c.subscribe(nil, rawSub{Filter: "sl/t", Options: 1})
	c.send(pkt(0xE0, []byte{0x00}, props(pU32(propSessionExpiry, 0))))
	c.waitClosed("after DISCONNECT")
	c = dialRaw(t, b, "reconnect")
	if ca := c.connect(spec); ca.SessionPresent {
		t.Errorf("reconnect after DISCONNECT with Session Expiry Interval 0: Session Present 1, want 0 (the session ended)")
	}
}
