package broker_test

import (
	"fmt"
	"testing"
	"time"

	"gatewayd/broker"
)

// A client that stops talking is disconnected once one and a half times its
// Keep Alive has passed [MQTT-3.1.2-24], and because that is not a normal
// disconnect its will is published [MQTT-3.1.2-8].
func TestConformanceKeepAliveExpiryClosesConnectionAndPublishesWill(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	watcher := dialV3(t, b, "watcher", 4, true)
	watcher.sub(t, "will/#", 1)

	// Both levels go silent at the same time, then each is checked.
	silent := map[byte]*rawClient{}
	for _, level := range []byte{4, 5} {
		c := dialRaw(t, b, fmt.Sprintf("silent client, level %d", level))
		c.connect(connectSpec{Version: level, ClientID: fmt.Sprintf("silent-%d", level), Clean: true, KeepAlive: 1,
			Will: &willSpec{Topic: fmt.Sprintf("will/keepalive/%d", level), Payload: "gone", QoS: 1}})
		silent[level] = c
	}
	for _, level := range []byte{4, 5} {
		t.Run(fmt.Sprintf("level %d", level), func(t *testing.T) {
			topic := fmt.Sprintf("will/keepalive/%d", level)
			c := silent[level]
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

// The keep alive the broker grants through Server Keep Alive is the one it
// enforces: a client asking for 120 s under max_keepalive 1 is disconnected
// after 1.5 s of silence.
func TestConformanceServerKeepAliveEnforcedV5(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.MaxKeepAlive = 1 }, broker.Options{})
	c := dialRaw(t, b, "asks for 120 s")
	ca := c.connect(connectSpec{Version: 5, ClientID: "ka120", Clean: true, KeepAlive: 120})
	if v, ok := ca.Props.num(propServerKeepAlive); !ok || v != 1 {
		t.Errorf("CONNACK Server Keep Alive %v (present %v), want 1", v, ok)
	}
	c.waitClosed("silent for longer than 1.5 x Server Keep Alive 1 s")
}

// A connection that never sends CONNECT is closed (section 3.1.4: the
// broker should not wait forever); connect_timeout bounds the wait.
func TestConformanceConnectionWithoutConnectIsClosed(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.ConnectTimeout = 500 * time.Millisecond }, broker.Options{})
	c := dialRaw(t, b, "never sends CONNECT")
	if got := c.waitClosed("connection that sent nothing"); len(got) != 0 {
		t.Errorf("got %s, want the connection closed with nothing sent", describePackets(got))
	}
}

// Any control packet from the client counts for keep alive
// [MQTT-3.1.2-23]: a client with Keep Alive 1 that publishes every 250 ms
// for 2 s and never sends PINGREQ stays connected.
func TestConformanceKeepAliveResetByAnyPacket(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	c := dialRaw(t, b, "busy publisher")
	c.connect(connectSpec{Version: 4, ClientID: "busy", Clean: true, KeepAlive: 1})
	for i := range 8 {
		c.send(v3pub("busy/t", 0, 0, fmt.Sprint(i)))
		time.Sleep(250 * time.Millisecond)
	}
	c.send([]byte{0xC0, 0x00})
	if p, err := c.next(waitTimeout); err != nil || p.Type != tPINGRESP {
		t.Fatalf("after 2 s of PUBLISH every 250 ms with Keep Alive 1: got %v, %v; want the connection open (PINGRESP)", p, err)
	}
}
