package broker_test

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
	"gatewayd/broker/state"
)

// With the durable store, a broker restart (a gateway reboot) keeps retained
// messages, persistent sessions with their subscriptions, and the QoS 1 and 2
// messages queued for them (section 4.1: session state must survive for the
// Session Expiry Interval).
func TestConformanceRestartWithDurableStoreKeepsState(t *testing.T) {
	dir := t.TempDir()
	open := func() state.Store {
		st, err := state.OpenDurable(dir, state.DurableOptions{})
		if err != nil {
			t.Fatalf("OpenDurable(%s): %v", dir, err)
		}
		return st
	}
	b := startBroker(t, nil, broker.Options{Store: open()})
	sub3 := dialV3(t, b, "survivor311", 4, false)
	sub3.sub(t, "rs/#", 2)
	sub3.Disconnect(100)
	sub5, _ := dialV5(t, b, &paho.Connect{ClientID: "survivor5", CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32p(3600)}})
	sub5.sub1(t, "rs/#", 2)
	_ = sub5.Disconnect(&paho.Disconnect{})
	waitOffline(t, b, 2)

	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "rs/config", 1, true, "retained v1")
	pub.pub(t, "rs/queued", 1, false, "queued q1")
	pub.pub(t, "rs/queued", 2, false, "queued q2")
	pub.Disconnect(100)
	b.stop(t)

	b = startBroker(t, nil, broker.Options{Store: open()})
	sub3, tok := connectV3(t, v3Options(b, "survivor311", 4, false))
	if err := tok.Error(); err != nil {
		t.Fatalf("3.1.1 reconnect after restart refused: %v", err)
	}
	if !tok.SessionPresent() {
		t.Errorf("3.1.1 persistent session after a restart with the durable store: Session Present 0, want 1")
	}
	sub5, ca := dialV5(t, b, &paho.Connect{ClientID: "survivor5", CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32p(3600)}})
	if !ca.SessionPresent {
		t.Errorf("v5 session (expiry 3600 s) after a restart with the durable store: Session Present 0, want 1")
	}
	for _, in := range []*inbox{sub3.in, sub5.in} {
		in.waitPayload(t, "queued q1")
		in.waitPayload(t, "queued q2")
	}
	late := dialV3(t, b, "late", 4, true)
	late.sub(t, "rs/config", 1)
	if m := late.in.waitPayload(t, "retained v1"); !m.Retain {
		t.Errorf("retained message after restart arrived with RETAIN 0")
	}
	pub = dialV3(t, b, "pub2", 4, true)
	pub.pub(t, "rs/after", 1, false, "after restart")
	sub3.in.waitPayload(t, "after restart")
	sub5.in.waitPayload(t, "after restart")
}
