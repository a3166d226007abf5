package broker_test

import (
	"fmt"
	"testing"

	"gatewayd/broker"
)

// A client that stops talking is disconnected once one and a half times its
// Keep Alive has passed [MQTT-3.1.2-24], and because that is not a normal
// disconnect its will is published [MQTT-3.1.2-8].
func TestConformanceKeepAliveExpiryClosesConnectionAndPublishesWill(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	watcher := dialV3(t, b, "watcher", 4, true)
	watcher.sub(t, "will/#", 1)

	for _, level := range []byte{4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			topic := fmt.Sprintf("will/keepalive/%d", level)
			c := dialRaw(t, b, "silent client")
			c.connect(connectSpec{Version: level, ClientID: fmt.Sprintf("silent-%d", level), Clean: true, KeepAlive: 1,
				Will: &willSpec{Topic: topic, Payload: "gone", QoS: 1}})
			got := c.waitClosed("client silent for longer than 1.5 x Keep Alive 1 s")
			if level == 5 {
				for _, p := range got {
					if p.Type == tDISCONNECT && p.disconnectReason() != 0x8D {
						t.Errorf("keep alive timeout DISCONNECT reason %s, want 0x8D Keep Alive timeout", reasonHex(p.disconnectReason()))
					}
				}
			}
			m := watcher.in.waitFor(t, "will after keep alive timeout", func(m message) bool { return m.Topic == topic })
			if m.Payload != "gone" {
				t.Errorf("will payload %q, want %q", m.Payload, "gone")
			}
		})
	}
}

// PINGREQ is answered with PINGRESP [MQTT-3.12.4-1], wire bytes D0 00.
func TestConformancePingreqGetsPingresp(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	for _, level := range []byte{3, 4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			c := dialRaw(t, b, "pinger")
			c.connect(connectSpec{Version: level, ClientID: fmt.Sprintf("pinger-%d", level), Clean: true, KeepAlive: 30})
			for i := 0; i < 3; i++ {
				c.send([]byte{0xC0, 0x00})
				p := c.expect(tPINGRESP)
				if p.Flags != 0 || len(p.Body) != 0 {
					t.Fatalf("PINGRESP %v, want bytes d0 00", p)
				}
			}
		})
	}
}
