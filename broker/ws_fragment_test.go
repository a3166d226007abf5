package broker

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker/packet"
)

// fragmentStream is CONNECT, SUBSCRIBE with three filters and a 5.0 PUBLISH
// QoS 1 with properties that matches one of them, as the bytes a client sends.
func fragmentStream(t *testing.T, id string) []byte {
	t.Helper()
	var b []byte
	var err error
	for _, p := range []packet.Packet{
		&packet.Connect{ProtocolName: []byte("MQTT"), Version: packet.V5, CleanStart: true, KeepAlive: 30, ClientID: []byte(id)},
		&packet.Subscribe{PacketID: 7, Subscriptions: []packet.Subscription{
			{Filter: []byte("frag/" + id + "/a"), QoS: 0},
			{Filter: []byte("frag/" + id + "/+/c"), QoS: 1},
			{Filter: []byte("frag/other/#"), QoS: 2},
		}},
		&packet.Publish{QoS: 1, PacketID: 9, Topic: []byte("frag/" + id + "/b/c"), Payload: []byte("payload across messages"),
			Props: packet.Properties{Present: 1 << packet.PropMessageExpiry, MessageExpiry: 60, ContentType: []byte("text/plain"),
				User: []packet.UserProperty{{Key: []byte("k"), Value: []byte("v")}}}},
	} {
		if b, err = packet.Append(b, p, packet.V5); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// checkFragmentReplies reads CONNACK, the SUBACK of fragmentStream and its
// PUBLISH delivered back with its properties, and the PUBACK (in either
// order with the delivery).
func checkFragmentReplies(t *testing.T, r *rawClient, id string) {
	t.Helper()
	if ca, ok := r.next().(*packet.Connack); !ok || ca.Reason != packet.Success {
		t.Fatalf("%s: no successful CONNACK", id)
	}
	if rc := r.suback(7); fmt.Sprint(rc) != fmt.Sprint([]packet.ReasonCode{0, 1, 2}) {
		t.Fatalf("%s: SUBACK %v, want granted 0 1 2", id, rc)
	}
	gotAck, gotPub := false, false
	for !gotAck || !gotPub {
		switch p := r.next().(type) {
		case *packet.Ack:
			if p.Kind != packet.PUBACK || p.PacketID != 9 {
				t.Fatalf("%s: got %v %d, want PUBACK 9", id, p.Kind, p.PacketID)
			}
			gotAck = true
		case *packet.Publish:
			if string(p.Topic) != "frag/"+id+"/b/c" || string(p.Payload) != "payload across messages" ||
				string(p.Props.ContentType) != "text/plain" || len(p.Props.User) != 1 || string(p.Props.User[0].Value) != "v" {
				t.Fatalf("%s: delivered %q %q %+v", id, p.Topic, p.Payload, p.Props)
			}
			gotPub = true
		default:
			t.Fatalf("%s: got %v", id, p.Type())
		}
	}
}

// The ws listener reads the connection as a byte stream: an MQTT packet split
// over several WebSocket messages at any byte, several packets in one
// message, and one byte a message all decode as over TCP.
func TestWebSocketFragmentedPackets(t *testing.T) {
	s, _ := startServer(t, func(c *Config) {
		c.Listeners = []ListenerConfig{{Name: "ws", Address: "127.0.0.1:0", Type: "ws"}}
	}, Options{})
	url := wsURL(s, 0, "ws")

	run := func(id string, split func(b []byte) [][]byte) {
		t.Helper()
		wc, _, err := dialWS(t, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer wc.CloseNow()
		ctx, cancel := ctxWait()
		defer cancel()
		for _, m := range split(fragmentStream(t, id)) {
			if err := wc.Write(ctx, websocket.MessageBinary, m); err != nil {
				t.Fatalf("%s: write: %v", id, err)
			}
		}
		r := newRaw(t, websocket.NetConn(context.Background(), wc, websocket.MessageBinary), packet.V5)
		checkFragmentReplies(t, r, id)
	}

	n := len(fragmentStream(t, "c000"))
	// Two messages, split at every byte: every boundary falls inside some
	// packet's fixed header, variable header, properties or payload, or
	// between two packets.
	for k := 1; k < n; k++ {
		run(fmt.Sprintf("c%03d", k), func(b []byte) [][]byte { return [][]byte{b[:k], b[k:]} })
	}
	// Three messages: every packet split at k, the pieces of neighbouring
	// packets sharing a message.
	for k := 1; k < n-1; k++ {
		run(fmt.Sprintf("t%03d", k), func(b []byte) [][]byte { return [][]byte{b[:k], b[k : k+1], b[k+1:]} })
	}
	// All three packets in one message.
	run("all1", func(b []byte) [][]byte { return [][]byte{b} })
	// One byte a message.
	run("byte", func(b []byte) [][]byte {
		var ms [][]byte
		for i := range b {
			ms = append(ms, b[i:i+1])
		}
		return ms
	})
}

// paho.golang writes a packet as several Writes (fixed header, then each
// part: net.Buffers.WriteTo calls Write once a buffer on any conn that is not
// a *net.TCPConn), and writes from more than one goroutine: the caller's
// Subscribe or Publish, and its own goroutine acknowledging a received QoS 1
// message. websocket.NetConn sends each Write as its own WebSocket message and
// serialises single Writes only, so a PUBACK can land between the parts of a
// SUBSCRIBE; the broker then reads the PUBACK's bytes as part of the
// SUBSCRIBE and rejects it as malformed. paho documents that ClientConfig.Conn
// must be safe for concurrent writes and that packets.NewThreadSafeConn makes
// it so (it locks around a whole packet's Writes). With that wrapper, paho
// over websocket.NetConn runs every cycle cleanly; without it see
// unsafeWSConn below.
func TestWebSocketPahoCycles(t *testing.T) {
	s, _ := startServer(t, func(c *Config) {
		c.Listeners = []ListenerConfig{{Name: "ws", Address: "127.0.0.1:0", Type: "ws"}}
	}, Options{})
	if err := pahoWSCycles(t, wsURL(s, 0, "ws"), 200, packets.NewThreadSafeConn); err != nil {
		t.Fatal(err)
	}
}

// pahoWSCycles connects a paho.golang client over websocket.NetConn (wrapped
// by wrap) cycles times; each cycle subscribes, publishes QoS 1 to itself and,
// while paho acknowledges that delivery from its own goroutine, subscribes to
// several more filters and publishes again. It returns the first failure.
func pahoWSCycles(t *testing.T, url string, cycles int, wrap func(net.Conn) net.Conn) error {
	for i := range cycles {
		if err := pahoWSCycle(t, url, i, wrap); err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
	}
	return nil
}

func pahoWSCycle(t *testing.T, url string, i int, wrap func(net.Conn) net.Conn) error {
	wc, _, err := dialWS(t, url, nil)
	if err != nil {
		return err
	}
	defer wc.CloseNow()
	var mu sync.Mutex
	got := 0
	gotAll := make(chan struct{})
	const want = 2
	pc := paho.NewClient(paho.ClientConfig{Conn: wrap(websocket.NetConn(context.Background(), wc, websocket.MessageBinary)), PacketTimeout: wait,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			if got++; got == want {
				close(gotAll)
			}
			return true, nil
		}}})
	ctx, cancel := ctxWait()
	defer cancel()
	id := fmt.Sprintf("paho-ws-%d", i)
	if _, err := pc.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer func() { pc.Disconnect(&paho.Disconnect{}); <-pc.Done() }()
	if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: id + "/a", QoS: 1}}}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if _, err := pc.Publish(ctx, &paho.Publish{Topic: id + "/a", QoS: 1, Payload: []byte("one"),
		Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}}}); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	// paho acknowledges the delivery of "one" now, from its own goroutine.
	if _, err := pc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: id + "/b/+", QoS: 1}, {Topic: id + "/c/#", QoS: 0}, {Topic: id + "/d", QoS: 2}}}); err != nil {
		return fmt.Errorf("second subscribe: %w", err)
	}
	if _, err := pc.Publish(ctx, &paho.Publish{Topic: id + "/b/x", QoS: 1, Payload: []byte("two")}); err != nil {
		return fmt.Errorf("second publish: %w", err)
	}
	select {
	case <-gotAll:
	case <-ctx.Done():
		return fmt.Errorf("deliveries: %w", ctx.Err())
	}
	return nil
}

// partsWriter records each Write as one part, as websocket.NetConn sends
// each Write as one WebSocket message.
type partsWriter struct{ parts [][]byte }

func (w *partsWriter) Write(p []byte) (int, error) {
	w.parts = append(w.parts, append([]byte(nil), p...))
	return len(p), nil
}

// The interleaving paho.golang produces without a write lock, replayed
// message by message: paho's SUBSCRIBE is several Writes, and a PUBACK
// written from another goroutine between them ends up inside the SUBSCRIBE's
// remaining length. The broker reads exactly the bytes it was sent and
// closes the connection as malformed; the same parts without the PUBACK
// between them are accepted.
func TestWebSocketPahoInterleavedWrites(t *testing.T) {
	s, _ := startServer(t, func(c *Config) {
		c.Listeners = []ListenerConfig{{Name: "ws", Address: "127.0.0.1:0", Type: "ws"}}
	}, Options{})
	sub := &packets.Subscribe{PacketID: 3, Subscriptions: []packets.SubOptions{{Topic: "x/a", QoS: 1}, {Topic: "x/b", QoS: 0}}}
	var w partsWriter
	if _, err := sub.WriteTo(&w); err != nil {
		t.Fatal(err)
	}
	if len(w.parts) < 2 {
		t.Fatalf("paho wrote SUBSCRIBE as %d Write(s); this test expects several", len(w.parts))
	}
	puback, err := packet.Append(nil, &packet.Ack{Kind: packet.PUBACK, PacketID: 1}, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	for _, interleave := range []bool{false, true} {
		wc, _, err := dialWS(t, wsURL(s, 0, "ws"), nil)
		if err != nil {
			t.Fatal(err)
		}
		r := newRaw(t, websocket.NetConn(context.Background(), wc, websocket.MessageBinary), packet.V5)
		r.mustConnect(fmt.Sprintf("interleave-%v", interleave), true)
		ctx, cancel := ctxWait()
		for i, part := range w.parts {
			if err := wc.Write(ctx, websocket.MessageBinary, part); err != nil {
				t.Fatal(err)
			}
			if i == 0 && interleave {
				if err := wc.Write(ctx, websocket.MessageBinary, puback); err != nil {
					t.Fatal(err)
				}
			}
		}
		cancel()
		if !interleave {
			if rc := r.suback(3); fmt.Sprint(rc) != fmt.Sprint([]packet.ReasonCode{1, 0}) {
				t.Fatalf("SUBACK %v", rc)
			}
		} else {
			if d, ok := r.next().(*packet.Disconnect); !ok || d.Reason != packet.MalformedPacket {
				t.Fatalf("SUBSCRIBE with a PUBACK inside: want DISCONNECT malformed packet")
			}
			if seen := r.closed(); len(seen) != 0 {
				t.Fatalf("after DISCONNECT the broker sent %v, want close", seen)
			}
		}
		wc.CloseNow()
	}
}
