package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"gatewayd/internal/testmosquitto"
	"gatewayd/internal/testproc"
)

// wsRelay is an MQTT-over-WebSocket front for a TCP broker: it accepts
// WebSocket connections on path /mqtt with subprotocol "mqtt" and relays the
// binary frames' bytes to and from target.
func wsRelay(t *testing.T, target string, secure bool) *httptest.Server {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/mqtt" {
			http.NotFound(w, r)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			return
		}
		if ws.Subprotocol() != "mqtt" {
			ws.Close(websocket.StatusPolicyViolation, "subprotocol mqtt required")
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		wc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
		defer wc.Close()
		tc, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer tc.Close()
		done := make(chan struct{}, 2)
		go func() { io.Copy(tc, wc); done <- struct{}{} }()
		go func() { io.Copy(wc, tc); done <- struct{}{} }()
		<-done
		wc.Close()
		tc.Close()
		<-done
	})
	var srv *httptest.Server
	if secure {
		srv = httptest.NewTLSServer(h)
	} else {
		srv = httptest.NewServer(h)
	}
	t.Cleanup(srv.Close)
	return srv
}

func wsRoundTrip(t *testing.T, url string, cfg *tls.Config, mq *testmosquitto.Broker) {
	t.Helper()
	c := connect(t, Options{URL: url, TLS: cfg, CleanStart: true})
	got := newCollector()
	if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "ws/#", QoS: 2}); err != nil {
		t.Fatal(err)
	}
	plain := connect(t, Options{URL: mq.URL(), CleanStart: true})
	for q := byte(0); q <= 2; q++ {
		if err := plain.Publish(testCtx(t), &Message{Topic: "ws/in", Payload: []byte{q}, QoS: q}); err != nil {
			t.Fatal(err)
		}
		if m := got.next(t); m.Payload[0] != q || m.QoS != q {
			t.Fatalf("got %+v", m)
		}
		if err := c.Publish(testCtx(t), &Message{Topic: "ws/out", Payload: []byte{q}, QoS: q}); err != nil {
			t.Fatal(err)
		}
		if m := got.next(t); m.Topic != "ws/out" || m.Payload[0] != q {
			t.Fatalf("got %+v", m)
		}
	}
}

func TestWebSocketThroughRelay(t *testing.T) {
	mq := startMosquitto(t, "")
	srv := wsRelay(t, mq.Addr(), false)
	wsRoundTrip(t, "ws://"+strings.TrimPrefix(srv.URL, "http://")+"/mqtt", nil, mq)
}

func TestSecureWebSocketThroughRelay(t *testing.T) {
	mq := startMosquitto(t, "")
	srv := wsRelay(t, mq.Addr(), true)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	wsRoundTrip(t, "wss://"+strings.TrimPrefix(srv.URL, "https://")+"/mqtt", &tls.Config{RootCAs: pool}, mq)
}

func TestWebSocketWrongPath(t *testing.T) {
	mq := startMosquitto(t, "")
	srv := wsRelay(t, mq.Addr(), false)
	c, err := New(Options{URL: "ws://" + strings.TrimPrefix(srv.URL, "http://") + "/nope"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t)); err == nil {
		c.Disconnect(testCtx(t))
		t.Fatal("connected through a path that is not served")
	}
}

// TestWebSocketMosquitto uses mosquitto's own WebSocket listener when the
// installed mosquitto was built with WebSocket support (Debian's 2.0.11 is
// not: it cannot open a "protocol websockets" listener).
func TestWebSocketMosquitto(t *testing.T) {
	if _, err := exec.LookPath("mosquitto"); err != nil {
		t.Skip("mosquitto is not installed")
	}
	port := testproc.FreePort(t)
	conf := filepath.Join(t.TempDir(), "ws.conf")
	os.WriteFile(conf, []byte("listener "+strconv.Itoa(port)+" 127.0.0.1\nprotocol websockets\nallow_anonymous true\n"), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "mosquitto", "-c", conf).CombinedOutput()
	if ctx.Err() == nil {
		// It exited by itself: the listener could not be opened.
		t.Skipf("this mosquitto cannot open a WebSocket listener (built without libwebsockets): %s", lastLine(string(out)))
	}
	wsPort := testproc.FreePort(t)
	mq := startMosquitto(t, "listener "+strconv.Itoa(wsPort)+" 127.0.0.1\nprotocol websockets\n")
	wsRoundTrip(t, "ws://127.0.0.1:"+strconv.Itoa(wsPort)+"/mqtt", nil, mq)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
