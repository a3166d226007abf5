package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

// TestSysTopics: the $SYS values are retained and published at start, so a
// subscriber sees them at once, and refreshed every interval.
func TestSysTopics(t *testing.T) {
	_, addr := startServer(t, func(c *Config) { c.SysInterval = 50 * time.Millisecond }, Options{Version: "gatewayd test"})
	c := dialRaw(t, addr, packet.V311)
	c.mustConnect("sys", true)
	c.subscribe(1, "$SYS/#", 0)
	want := map[string]bool{
		"$SYS/broker/version": true, "$SYS/broker/uptime": true, "$SYS/broker/clients/connected": true,
		"$SYS/broker/clients/total": true, "$SYS/broker/clients/disconnected": true, "$SYS/broker/clients/maximum": true,
		"$SYS/broker/messages/received": true, "$SYS/broker/messages/sent": true, "$SYS/broker/bytes/received": true,
		"$SYS/broker/bytes/sent": true, "$SYS/broker/publish/messages/received": true,
		"$SYS/broker/publish/messages/sent": true, "$SYS/broker/publish/messages/dropped": true,
		"$SYS/broker/subscriptions/count": true, "$SYS/broker/retained messages/count": true,
		"$SYS/broker/store/messages/count": true,
	}
	for _, v := range []string{"bytes/", "bytes/qos0/", "bytes/qos1/", "bytes/qos2/", "messages/qos0/", "messages/qos1/", "messages/qos2/"} {
		want["$SYS/broker/publish/"+v+"received"] = true
		want["$SYS/broker/publish/"+v+"sent"] = true
	}
	seen := map[string]string{}
	for missing := len(want); missing > 0; {
		p := c.nextPublish()
		if _, dup := seen[string(p.Topic)]; !dup && want[string(p.Topic)] {
			missing--
		}
		seen[string(p.Topic)] = string(p.Payload)
	}
	for topic := range want {
		if _, ok := seen[topic]; !ok {
			t.Errorf("%s not published", topic)
		}
	}
	if seen["$SYS/broker/version"] != "gatewayd test" {
		t.Errorf("version %q", seen["$SYS/broker/version"])
	}
	if !strings.HasSuffix(seen["$SYS/broker/uptime"], " seconds") {
		t.Errorf("uptime %q", seen["$SYS/broker/uptime"])
	}
	// Refreshed: clients/connected eventually says 1.
	for {
		p := c.nextPublish()
		if string(p.Topic) == "$SYS/broker/clients/connected" && string(p.Payload) == "1" {
			break
		}
	}
	// Clients may not publish under $SYS.
	c.publish("$SYS/broker/version", 0, false, 0, "forged")
	c.send(&packet.Pingreq{}) // the forged PUBLISH has been handled once PINGRESP is sent
	for c.next().Type() != packet.PINGRESP {
	}
	v := dialRaw(t, addr, packet.V311)
	v.mustConnect("v", true)
	v.subscribe(1, "$SYS/broker/version", 0)
	if p := v.nextPublish(); string(p.Payload) != "gatewayd test" {
		t.Fatalf("version %q after a client published to it", p.Payload)
	}
}

// TestStatsCountConnectsAndDisconnects: Connects and Disconnects count what
// the gauges hide: every accepted connection and every end of one, a
// takeover included, and nothing for a connection that never got a CONNACK.
func TestStatsCountConnectsAndDisconnects(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	check := func(what string, connects, disconnects uint64, connected int64) {
		t.Helper()
		waitFor(t, what, func() bool {
			st := s.Stats()
			return st.Connects == connects && st.Disconnects == disconnects && st.ClientsConnected == connected
		})
	}
	a := dialRaw(t, addr, packet.V311)
	a.mustConnect("a", true)
	b := dialRaw(t, addr, packet.V5)
	b.mustConnect("b", true)
	check("two connected", 2, 0, 2)

	a.send(&packet.Disconnect{})
	a.closed()
	check("a gone", 2, 1, 1)

	// A takeover ends the first connection of b.
	b2 := dialRaw(t, addr, packet.V5)
	b2.mustConnect("b", true)
	b.closed()
	check("b taken over", 3, 2, 1)

	// Connections without a CONNACK are not clients.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	bad := dialRaw(t, addr, packet.V311)
	bad.sendBytes([]byte{0x10, 0x02, 0x00, 0x00}) // a CONNECT too short to be one
	bad.closed()
	check("after two connections that never connected", 3, 2, 1)

	b2.send(&packet.Disconnect{})
	b2.closed()
	check("all gone", 3, 3, 0)
}

// TestShutdownDisconnectsClients: v5 clients get DISCONNECT 0x8B, wills of
// connected clients go out, and Shutdown returns once everything stopped.
func TestShutdownDisconnectsClients(t *testing.T) {
	ts := newTestStore()
	s, addr := startServer(t, nil, Options{Store: ts})
	c := dialRaw(t, addr, packet.V5)
	c.connect(rawConnect{id: "c", clean: true, will: "w/c", willPayload: "gone", willRetain: true}.packet())
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d, ok := c.next().(*packet.Disconnect); !ok || d.Reason != packet.ServerShuttingDown {
		t.Fatal("want DISCONNECT 0x8B")
	}
	c.closed()
	if s.Stats().WillsPublished != 1 {
		t.Fatalf("wills published %d", s.Stats().WillsPublished)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if _, ok := ts.snap.Retained["w/c"]; !ok {
		t.Fatal("retained will not stored")
	}
}

// TestKeepAliveTimeout: no packet for 1.5 x keepalive closes the connection
// (v5: DISCONNECT 0x8D first) and publishes the will.
func TestKeepAliveTimeout(t *testing.T) {
	s, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V5)
	c.connect(rawConnect{id: "sleepy", clean: true, keepAlive: 1, will: "w", willPayload: "x"}.packet())
	if d, ok := c.next().(*packet.Disconnect); !ok || d.Reason != packet.KeepAliveTimeout {
		t.Fatal("want DISCONNECT 0x8D")
	}
	c.closed()
	waitFor(t, "will", func() bool { return s.Stats().WillsPublished == 1 })
}

// TestDisconnectExpiryFromZero: a DISCONNECT that sets a session expiry when
// CONNECT had none is a protocol error.
func TestDisconnectExpiryFromZero(t *testing.T) {
	_, addr := startServer(t, nil, Options{})
	c := dialRaw(t, addr, packet.V5)
	c.mustConnect("z", true)
	d := &packet.Disconnect{}
	d.Props.SessionExpiry = 60
	d.Props.Set(packet.PropSessionExpiry)
	c.send(d)
	if d, ok := c.next().(*packet.Disconnect); !ok || d.Reason != packet.ProtocolError {
		t.Fatal("want DISCONNECT 0x82")
	}
}

// TestListenerBusy: a taken port names the address and the key to change.
func TestListenerBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := DefaultConfig()
	cfg.Listeners = []ListenerConfig{{Address: ln.Addr().String()}}
	s, err := New(cfg, Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start()
	if err == nil {
		shutdown(t, s)
		t.Fatal("Start succeeded on a taken port")
	}
	if !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "broker.listeners[0].address") {
		t.Fatalf("error %q does not name the address and key", err)
	}
	shutdown(t, s)
}

// TestConfigValidate: New refuses a bad configuration with the key.
func TestConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaximumQoS = 3
	cfg.Listeners = []ListenerConfig{{Address: "nonsense"}}
	_, err := New(cfg, Options{})
	if err == nil || !strings.Contains(err.Error(), "maximum_qos") || !strings.Contains(err.Error(), "listeners[0].address") {
		t.Fatalf("error %v", err)
	}
}

// TestSlowConsumerDropsQoS0: a subscriber that does not read loses QoS 0
// messages beyond its output bound (counted) while the publisher and other
// subscribers carry on.
func TestSlowConsumerDropsQoS0(t *testing.T) {
	s, addr := startServer(t, func(c *Config) { c.MaxOutputBytes = 4096 }, Options{})
	cl, sv := net.Pipe()
	done := make(chan struct{})
	go func() {
		s.ServeConn(sv, "pipe")
		close(done)
	}()
	t.Cleanup(func() {
		cl.Close()
		<-done
	})
	stuck := newRaw(t, cl, packet.V311)
	stuck.mustConnect("stuck", true)
	stuck.subscribe(1, "flood", 0)
	// From here on stuck reads nothing: net.Pipe has no buffer, so the
	// broker's writer blocks on the first write.

	fast := dialRaw(t, addr, packet.V311)
	fast.mustConnect("fast", true)
	fast.subscribe(1, "flood", 0)
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	payload := strings.Repeat("x", 512)
	// Lockstep with the fast subscriber, so its own output never fills.
	for i := range 200 {
		pub.publish("flood", 0, false, 0, payload)
		if p := fast.nextPublish(); len(p.Payload) != len(payload) {
			t.Fatalf("message %d: %d bytes", i, len(p.Payload))
		}
	}
	if st := s.Stats(); st.DroppedSlowConsumer == 0 {
		t.Fatalf("no slow-consumer drops counted: %+v", st)
	}
}

// TestMosquittoClients: Debian's mosquitto_sub and mosquitto_pub interoperate
// (3.1.1 and 5.0, retained, QoS 1).
func TestMosquittoClients(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_sub"); err != nil {
		t.Skip("mosquitto-clients not installed")
	}
	_, addr := startServer(t, nil, Options{})
	host, port, _ := net.SplitHostPort(addr)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		pub := exec.Command("mosquitto_pub", "-h", host, "-p", port, "-V", v, "-q", "1", "-r", "-t", "mq/"+v, "-m", "hello "+v)
		if out, err := pub.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub %s: %v\n%s", v, err, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		sub := exec.CommandContext(ctx, "mosquitto_sub", "-h", host, "-p", port, "-V", v, "-q", "1", "-t", "mq/"+v, "-C", "1", "-v")
		var out bytes.Buffer
		sub.Stdout, sub.Stderr = &out, &out
		err := sub.Run()
		cancel()
		if err != nil {
			var ee *exec.ExitError
			errors.As(err, &ee)
			t.Fatalf("mosquitto_sub %s: %v\n%s", v, err, out.String())
		}
		if got := strings.TrimSpace(out.String()); got != "mq/"+v+" hello "+v {
			t.Fatalf("mosquitto_sub %s printed %q", v, got)
		}
	}
}

// TestKeepAliveZero: a client with keepalive 0 is not disconnected for being
// quiet (the connect timeout no longer applies once connected).
func TestKeepAliveZero(t *testing.T) {
	_, addr := startServer(t, func(c *Config) { c.ConnectTimeout = 50 * time.Millisecond }, Options{})
	c := dialRaw(t, addr, packet.V311)
	c.connect(&packet.Connect{ClientID: []byte("quiet"), CleanStart: true})
	time.Sleep(200 * time.Millisecond) // four connect timeouts of silence
	c.send(&packet.Pingreq{})
	if p := c.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v", p.Type())
	}
}

// TestConnectTimeout: a connection that sends no CONNECT is closed.
func TestConnectTimeout(t *testing.T) {
	_, addr := startServer(t, func(c *Config) { c.ConnectTimeout = 50 * time.Millisecond }, Options{})
	c := dialRaw(t, addr, packet.V311)
	if seen := c.closed(); len(seen) != 0 {
		t.Fatalf("got %v", seen)
	}
}

// TestIdleConnectionMemory: an idle connected client costs the broker a few
// KiB or less, with no writer goroutine and no pooled buffers. With the event
// loop (the default) it costs its conn and session only. Without it, it
// costs those and a reader goroutine's stack: the reader that handled
// CONNECT has grown its stack, so once idle it hands the connection to a
// fresh goroutine whose stack is the 2 KiB minimum. The figure includes the
// test's own client-side sockets; a first group of as many clients comes and
// goes beforehand, so the figure is what an idle client costs a broker that
// has served as many before, without the runtime's one-time costs (its first
// stacks, pools, caches and the growth of the broker's tables).
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens many connections")
	}
	for _, mode := range []struct {
		name  string
		cfg   func(*Config)
		limit int64
	}{{"event loop", nil, 2 << 10}, {"goroutine per connection", goroutinePerConn, 4 << 10}} {
		t.Run(mode.name, func(t *testing.T) {
			s, addr := startServer(t, mode.cfg, Options{})
			const n = 400
			measure := func() uint64 {
				// Stacks shrink by half per collection at most.
				for range 4 {
					runtime.GC()
				}
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				return ms.HeapInuse + ms.StackInuse
			}
			open := func(prefix string, k int) []net.Conn {
				handoffs := readerHandoffs.Load()
				conns := make([]net.Conn, 0, k)
				for i := range k {
					nc, err := net.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					conns = append(conns, nc)
					c := newRaw(t, nc, packet.V311)
					c.mustConnect(fmt.Sprintf("%s-%d", prefix, i), true)
					c.buf = nil // the test client's own read buffer is not the broker's
				}
				waitFor(t, "all connected", func() bool { return s.Stats().ClientsConnected == int64(k) })
				if s.loop != nil {
					waitFor(t, "all back in the event loop", func() bool { return s.loop.served() == k })
				} else {
					waitHandoffs(t, handoffs, k)
				}
				return conns
			}
			closeAll := func(conns []net.Conn) {
				for _, nc := range conns {
					nc.Close()
				}
				waitFor(t, "all gone", func() bool { return s.Stats().ClientsConnected == 0 })
			}
			closeAll(open("warm", n))
			before := measure()
			conns := open("idle", n)
			after := measure()
			closeAll(conns)
			per := (int64(after) - int64(before)) / n
			t.Logf("%d bytes per idle connection (broker and test client together)", per)
			if per > mode.limit && !raceEnabled {
				t.Errorf("%d bytes per idle connection, want at most %d", per, mode.limit)
			}
		})
	}
}
