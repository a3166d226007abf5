package broker

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/coder/websocket"

	"gatewayd/broker/packet"
	"gatewayd/internal/testpki"
)

// dialWS opens a WebSocket with subprotocol mqtt (or the ones given) to url.
func dialWS(t testing.TB, url string, tc *tls.Config, protocols ...string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	if protocols == nil {
		protocols = []string{"mqtt"}
	}
	opts := &websocket.DialOptions{Subprotocols: protocols}
	if tc != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return websocket.Dial(ctx, url, opts)
}

// wsClient is an MQTT client over a WebSocket (binary frames).
func wsClient(t testing.TB, url string, tc *tls.Config, v packet.Version) *rawClient {
	t.Helper()
	wc, _, err := dialWS(t, url, tc)
	if err != nil {
		t.Fatalf("websocket dial %s: %v", url, err)
	}
	nc := websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
	t.Cleanup(func() { nc.Close() })
	return newRaw(t, nc, v)
}

func wsURL(s *Server, i int, scheme string) string {
	return scheme + "://" + s.Addrs()[i].String() + "/mqtt"
}

// MQTT over WebSocket: a 5.0 and a 3.1.1 client over coder/websocket publish
// and subscribe to each other through a ws listener, and to a client on the
// plain listener.
func TestWebSocketPublishSubscribe(t *testing.T) {
	s, _ := startServer(t, func(c *Config) {
		c.Listeners = []ListenerConfig{{Name: "ws", Address: "127.0.0.1:0", Type: "ws"}, {Name: "tcp", Address: "127.0.0.1:0"}}
	}, Options{})

	wc, _, err := dialWS(t, wsURL(s, 0, "ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if wc.Subprotocol() != "mqtt" {
		t.Fatalf("subprotocol %q, want mqtt", wc.Subprotocol())
	}
	v5ws := newRaw(t, websocket.NetConn(context.Background(), wc, websocket.MessageBinary), packet.V5)
	t.Cleanup(func() { wc.CloseNow() })
	v5ws.mustConnect("v5-ws", true)
	v5ws.subscribe(1, "ws/#", 1)

	raw := wsClient(t, wsURL(s, 0, "ws"), nil, packet.V311)
	raw.mustConnect("raw-ws", true)
	raw.subscribe(1, "ws/#", 1)
	tcp := dialRaw(t, s.Addrs()[1].String(), packet.V5)
	tcp.mustConnect("tcp", true)
	tcp.publish("ws/a", 1, false, 1, "from tcp")
	tcp.nextAck(packet.PUBACK)
	if m := raw.nextPublish(); string(m.Payload) != "from tcp" {
		t.Fatalf("raw ws client received %q", m.Payload)
	}
	if m := v5ws.nextPublish(); string(m.Payload) != "from tcp" {
		t.Fatalf("v5 ws client received %q", m.Payload)
	}
	v5ws.publish("ws/b", 1, false, 2, "from ws")
	for {
		p := v5ws.next()
		if a, ok := p.(*packet.Ack); ok && a.Kind == packet.PUBACK {
			continue
		}
		if m, ok := p.(*packet.Publish); !ok || string(m.Payload) != "from ws" {
			t.Fatalf("v5 ws client got %v, want its own message back", p.Type())
		}
		break
	}
	if m := raw.nextPublish(); string(m.Payload) != "from ws" {
		t.Fatalf("raw ws client received %q", m.Payload)
	}

	// Without subprotocol mqtt the broker closes the WebSocket.
	wc2, _, err := dialWS(t, wsURL(s, 0, "ws"), nil, "chat")
	if err == nil {
		defer wc2.CloseNow()
		ctx, cancel := ctxWait()
		defer cancel()
		if _, _, err := wc2.Read(ctx); err == nil {
			t.Fatalf("a WebSocket without subprotocol mqtt stayed open")
		}
	}
}

// WebSocket connections go through the same authentication and ACL as TCP
// ones, and wss is a ws listener with TLS.
func TestWebSocketAuthAndACL(t *testing.T) {
	dir := t.TempDir()
	pw := passwordFile(t, dir, map[string]string{"alice": "a"})
	acl := writeFile(t, dir, "acl", "user alice\ntopic readwrite alice/#\n")
	p := testpki.New(t, "", "gatewayd test CA")
	cert, key, _ := p.Localhost("server")
	s, _ := startServer(t, func(c *Config) {
		c.PasswordFile, c.ACLFile = pw, acl
		c.Listeners = []ListenerConfig{
			{Name: "ws", Address: "127.0.0.1:0", Type: "ws", AllowAnonymous: boolp(false)},
			{Name: "wss", Address: "127.0.0.1:0", Type: "ws", Path: "/mqtt", AllowAnonymous: boolp(false),
				TLS: &TLSConfig{CertFile: cert, KeyFile: key}},
		}
	}, Options{})
	tc := &tls.Config{RootCAs: p.Pool}
	for i, u := range []struct {
		url string
		tc  *tls.Config
	}{{wsURL(s, 0, "ws"), nil}, {wsURL(s, 1, "wss"), tc}} {
		anon := wsClient(t, u.url, u.tc, packet.V5)
		if ack := anon.connect(rawConnect{id: "anon", clean: true}.packet()); ack.Reason != packet.NotAuthorized {
			t.Fatalf("%s anonymous: CONNACK %#x, want 0x87", u.url, ack.Reason)
		}
		bad := wsClient(t, u.url, u.tc, packet.V311)
		c := rawConnect{id: "bad", clean: true, user: "alice"}.packet()
		c.PasswordFlag, c.Password = true, []byte("wrong")
		if ack := bad.connect(c); ack.Reason != packet.V3RefusedBadUsernamePassword {
			t.Fatalf("%s wrong password: CONNACK %#x, want 0x04", u.url, ack.Reason)
		}
		alice := wsClient(t, u.url, u.tc, packet.V5)
		c = rawConnect{id: "alice" + itoa(i), clean: true, user: "alice"}.packet()
		c.PasswordFlag, c.Password = true, []byte("a")
		if ack := alice.connect(c); ack.Reason != packet.Success {
			t.Fatalf("%s alice: CONNACK %#x", u.url, ack.Reason)
		}
		if rc := alice.subscribe(1, "other/#", 0); rc[0] != packet.NotAuthorized {
			t.Fatalf("%s SUBSCRIBE other/#: %v, want 0x87", u.url, rc)
		}
		alice.publish("other/x", 1, false, 2, "x")
		if a := alice.nextAck(packet.PUBACK); a.Reason != packet.NotAuthorized {
			t.Fatalf("%s PUBLISH other/x: %#x, want 0x87", u.url, a.Reason)
		}
		alice.subscribe(3, "alice/#", 0)
		alice.publish("alice/x", 0, false, 0, "mine")
		if m := alice.nextPublish(); string(m.Payload) != "mine" {
			t.Fatalf("%s received %q", u.url, m.Payload)
		}
	}
}

// A browser page from another origin may not open the WebSocket (the
// upgrade is refused with 403); one from the listener's own host may, and
// one from a host listed in origins.
func TestWebSocketRefusesCrossOriginPages(t *testing.T) {
	s, _ := startServer(t, func(c *Config) {
		c.Listeners = []ListenerConfig{{Address: "127.0.0.1:0", Type: "ws", Origins: []string{"*.dashboard.example"}}}
	}, Options{})
	dial := func(origin string) (*http.Response, error) {
		ctx, cancel := ctxWait()
		defer cancel()
		wc, resp, err := websocket.Dial(ctx, wsURL(s, 0, "ws"), &websocket.DialOptions{
			Subprotocols: []string{"mqtt"}, HTTPHeader: http.Header{"Origin": {origin}}})
		if err == nil {
			wc.CloseNow()
		}
		return resp, err
	}
	if resp, err := dial("http://evil.example"); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin upgrade: err %v, response %v; want 403", err, resp)
	}
	if _, err := dial("http://" + s.Addrs()[0].String()); err != nil {
		t.Fatalf("same-origin upgrade refused: %v", err)
	}
	if _, err := dial("https://ops.dashboard.example"); err != nil {
		t.Fatalf("upgrade from an origin listed in origins refused: %v", err)
	}
}
