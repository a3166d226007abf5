package bridge

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/broker/packet"
	"gatewayd/internal/testenv"
	"gatewayd/internal/testmosquitto"
	"gatewayd/internal/testproxy"
)

// tap relays TCP between the bridge and mosquitto (a testproxy.Proxy: cut,
// restore, hold back one way) and reads the MQTT packets it carries: it sees
// what the cloud has received and what the bridge was told.
type tap struct {
	*testproxy.Proxy
	v packet.Version
	// Data messages: PUBLISH from the bridge on topics starting so.
	prefix string

	mu    sync.Mutex
	links []*tapLink // by connection, in the order accepted
	// The most QoS 1/2 data PUBLISH that were unacknowledged at once on
	// one connection: sent by the bridge, no PUBACK passed back to it.
	maxUnacked int
}

// tapLink is what went through one relayed connection.
type tapLink struct {
	unacked map[uint16]string // data PUBLISH not yet acknowledged: their payloads
	sent    []string          // payloads of data PUBLISH sent, in order
	acked   map[string]bool   // payloads whose PUBACK reached the bridge
	closed  bool
}

func newTap(t *testing.T, target string, v packet.Version, prefix string) *tap {
	t.Helper()
	tp := &tap{Proxy: testproxy.New(t, target), v: v, prefix: prefix}
	tp.Watch(tp.observe)
	return tp
}

// observe notes what the packets the proxy carries say.
func (tp *tap) observe(e testproxy.Event) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for len(tp.links) <= e.Conn {
		tp.links = append(tp.links, &tapLink{unacked: map[uint16]string{}, acked: map[string]bool{}})
	}
	l := tp.links[e.Conn]
	h, body := e.Header, e.Body
	switch {
	case e.Closed:
		l.closed = true
	case h.Type == packet.PUBLISH && e.Dir == testproxy.ToBroker:
		qos := (h.Flags >> 1) & 3
		tl := int(binary.BigEndian.Uint16(body))
		topic := string(body[2 : 2+tl])
		rest := body[2+tl:]
		var id uint16
		if qos > 0 {
			id = binary.BigEndian.Uint16(rest)
			rest = rest[2:]
		}
		if tp.v == packet.V5 {
			plen, n := uvarint(rest)
			rest = rest[n+plen:]
		}
		if !strings.HasPrefix(topic, tp.prefix) {
			return
		}
		l.sent = append(l.sent, string(rest))
		if qos > 0 {
			l.unacked[id] = string(rest)
			tp.maxUnacked = max(tp.maxUnacked, len(l.unacked))
		}
	case (h.Type == packet.PUBACK || h.Type == packet.PUBREC) && e.Dir == testproxy.ToClient:
		id := binary.BigEndian.Uint16(body)
		if p, ok := l.unacked[id]; ok {
			l.acked[p] = true
			delete(l.unacked, id)
		}
	}
}

func uvarint(b []byte) (v, n int) {
	for shift := 0; n < len(b); shift += 7 {
		c := b[n]
		n++
		v |= int(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	return v, n
}

// unacked returns how many data PUBLISH are unacknowledged on the live
// connection.
func (tp *tap) unacked() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	n := 0
	for _, l := range tp.links {
		if !l.closed {
			n += len(l.unacked)
		}
	}
	return n
}

func (tp *tap) most() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.maxUnacked
}

// waitUnacked waits until n data PUBLISH are unacknowledged (with atLeast,
// n or more).
func (tp *tap) waitUnacked(t *testing.T, n int, atLeast bool) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(20 * time.Second))
	for u := tp.unacked(); u != n && !(atLeast && u > n); u = tp.unacked() {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages unacknowledged at the cloud, want %d", u, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkResendOrder checks what the bridge sent up, connection by
// connection: each connection's data messages are consecutive, and each
// starts with the first message that no earlier connection saw acknowledged
// (what was in flight when a link dropped goes again first, in order).
func (tp *tap) checkResendOrder(t *testing.T) {
	t.Helper()
	tp.mu.Lock()
	defer tp.mu.Unlock()
	acked := map[string]bool{}
	sent := map[int]bool{}
	for i, l := range tp.links {
		if len(l.sent) == 0 {
			continue
		}
		firstUnacked := -1
		for v := 0; sent[v]; v++ {
			if !acked[strconv.Itoa(v)] {
				firstUnacked = v
				break
			}
		}
		if firstUnacked < 0 {
			firstUnacked = len(sent)
		}
		prev := -1
		for j, p := range l.sent {
			v, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("payload %q", p)
			}
			switch {
			case j == 0 && v != firstUnacked:
				t.Errorf("connection %d starts with %d, want %d (the first not acknowledged before)", i, v, firstUnacked)
			case j > 0 && v != prev+1:
				t.Errorf("connection %d: %d after %d", i, v, prev)
			}
			prev = v
			sent[v] = true
		}
		for p := range l.acked {
			acked[p] = true
		}
		t.Logf("connection %d: sent %d, %s..%s, %d acknowledged", i, len(l.sent), l.sent[0], l.sent[len(l.sent)-1], len(l.acked))
	}
}

// waitInflightOut waits until the bridge has n local messages in its hands
// (the local broker counts a message in flight to the bridge as soon as it
// has sent it, a little before the bridge has it).
func waitInflightOut(t *testing.T, b *Bridge, n int) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(10 * time.Second))
	for b.Stats().InflightOut != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages in the bridge's hands, want %d", b.Stats().InflightOut, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// windowEnv is a bridge to mosquitto through a tap.
type windowEnv struct {
	m   *testmosquitto.Broker
	tp  *tap
	g   *gateway
	b   *Bridge
	cfg Config
	up  *recorder
	pub *client.Client
}

func newWindowEnv(t *testing.T, proto string, window int, edit func(*Config)) *windowEnv {
	t.Helper()
	e := &windowEnv{m: startMosquitto(t)}
	v := packet.V5
	if proto == "3.1.1" {
		v = packet.V311
	}
	e.tp = newTap(t, e.m.Addr(), v, "gw1/sensors/seq")
	e.g = startGateway(t, t.TempDir())
	e.up = cloudSubscriber(t, e.m, "upstream", "gw1/sensors/seq")
	e.cfg = basicConfig(e.tp.URL())
	e.cfg.Protocol, e.cfg.MaxInflight = proto, window
	// Long enough that holding the acknowledgements back is not taken
	// for a dead link.
	e.cfg.KeepAlive = 30 * time.Second
	if edit != nil {
		edit(&e.cfg)
	}
	b, err := New(e.cfg, Options{GatewayID: "gw1", Broker: e.g.srv, Logger: quietLog(), SysInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b.replace = make(chan struct{})
	if err := b.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopBridge(t, b) })
	e.b = b
	waitState(t, b, "connected", 10*time.Second)
	e.pub = localClient(t, e.g, "sensor")
	return e
}

// A backlog drains with a full window of messages in flight to the cloud:
// while the cloud's acknowledgements are held back, exactly max_inflight
// messages are sent and unacknowledged (never more), and the bridge counts
// them in flight; once they flow, every message arrives once, in order.
// max_inflight 1 keeps one message in flight.
func TestWindowOutUsedAndBounded(t *testing.T) {
	cases := []struct {
		proto  string
		window int // 0: the default
		want   int
	}{
		{"5", 8, 8},
		{"3.1.1", 8, 8},
		{"5", 0, DefaultMaxInflight},
		{"3.1.1", 0, DefaultMaxInflight311},
		{"5", 1, 1},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("protocol %s/max_inflight %d", c.proto, c.window), func(t *testing.T) {
			e := newWindowEnv(t, c.proto, c.window, nil)
			const n = 300
			e.tp.Hold(testproxy.ToClient, true)
			publishSeq(t, e.pub, "sensors/seq", 1, 0, n)
			e.tp.waitUnacked(t, c.want, false)
			waitQueued(t, e.b, n, 10*time.Second)
			// Nothing more goes while nothing is acknowledged.
			time.Sleep(200 * time.Millisecond)
			if u := e.tp.unacked(); u != c.want {
				t.Errorf("%d messages unacknowledged at the cloud, want %d", u, c.want)
			}
			if st := e.b.Stats(); st.InflightOut != c.want || st.Sent != 0 {
				t.Errorf("in flight %d (want %d), sent %d (want 0)", st.InflightOut, c.want, st.Sent)
			}
			e.tp.Hold(testproxy.ToClient, false)
			got := e.up.waitFor(t, 60*time.Second, "all arrived upstream", arrived(n))
			if dups := checkSequence(t, got, n); dups != 0 {
				t.Errorf("%d repeats without a reconnection", dups)
			}
			waitQueued(t, e.b, 0, 10*time.Second)
			if most := e.tp.most(); most != c.want {
				t.Errorf("at most %d unacknowledged at once, want %d", most, c.want)
			}
			st := e.b.Stats()
			if st.Sent != n || st.InflightOut != 0 {
				t.Errorf("sent %d (want %d), in flight %d", st.Sent, n, st.InflightOut)
			}
			e.tp.checkResendOrder(t)
		})
	}
}

// A link lost in the middle of a windowed drain, with a full window
// unacknowledged, loses nothing and keeps the order: on the next connection
// the messages that were in flight go first, in order, then the rest. The
// link is cut (MQTT 5 session resumed; MQTT 3.1.1 clean session, so the
// messages go again as new ones), or the bridge replaces its cloud client
// (as with an Azure SAS token renewal), which fails the messages in flight
// back to the bridge; with drain_rate, newer messages are waiting in the
// bridge's hands then, and must not overtake.
func TestWindowLinkLostMidDrain(t *testing.T) {
	cases := []struct {
		name    string
		proto   string
		window  int
		clean   bool
		replace bool
		rate    float64
	}{
		{"cut/protocol 5", "5", 32, false, false, 0},
		{"cut/protocol 3.1.1 clean session", "3.1.1", 16, true, false, 0},
		{"client replaced/protocol 5", "5", 32, false, true, 0},
		{"client replaced/protocol 3.1.1", "3.1.1", 16, false, true, 0},
		{"client replaced/drain_rate", "5", 32, false, true, 200},
		{"cut/max_inflight 1", "5", 1, false, false, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newWindowEnv(t, c.proto, c.window, func(cfg *Config) { cfg.CleanStart, cfg.DrainRate = c.clean, c.rate })
			n, mid := 2000, 500
			if c.rate > 0 {
				// Past the burst of one second's worth.
				n, mid = 600, 300
			}
			e.tp.Cut(true)
			waitLost(t, e.b, 10*time.Second)
			publishSeq(t, e.pub, "sensors/seq", 1, 0, n)
			waitQueued(t, e.b, n, 10*time.Second)
			e.tp.Restore()
			e.up.waitFor(t, 60*time.Second, "some drained", arrived(mid))
			e.tp.Hold(testproxy.ToClient, true)
			if c.rate > 0 {
				// A few in flight, the rest of the window waiting for
				// drain_rate.
				e.tp.waitUnacked(t, 4, true)
			} else {
				e.tp.waitUnacked(t, c.window, false)
			}
			if c.replace {
				e.b.replace <- struct{}{}
				// The old connection ends with its acknowledgements held
				// back (the new one waits for its CONNACK until then).
				e.tp.waitUnacked(t, 0, false)
			} else {
				e.tp.Cut(false)
			}
			e.tp.Hold(testproxy.ToClient, false)
			got := e.up.waitFor(t, 120*time.Second, "all arrived upstream", arrived(n))
			dups := checkSequence(t, got, n)
			if dups > c.window {
				t.Errorf("%d repeats, more than the window of %d", dups, c.window)
			}
			waitQueued(t, e.b, 0, 10*time.Second)
			e.tp.checkResendOrder(t)
			st := e.b.Stats()
			t.Logf("%d messages, %d repeated, stats %+v", n, dups, st)
			if st.Sent != uint64(n) || st.InflightOut != 0 {
				t.Errorf("sent %d (want %d), in flight %d", st.Sent, n, st.InflightOut)
			}
			for k, v := range st.Dropped {
				if v != 0 {
					t.Errorf("dropped %s: %d", k, v)
				}
			}
			if most := e.tp.most(); most > c.window {
				t.Errorf("%d unacknowledged at once, more than the window of %d", most, c.window)
			}
		})
	}
}

// gate wraps the bridge's end of its local connection: while held, what
// the local broker sends (its acknowledgements) waits unread.
type gate struct {
	net.Conn
	mu   sync.Mutex
	cond *sync.Cond
	held bool
	buf  []byte
	err  error
}

func newGate(c net.Conn) *gate {
	g := &gate{Conn: c}
	g.cond = sync.NewCond(&g.mu)
	go func() {
		b := make([]byte, 32<<10)
		for {
			n, err := c.Read(b)
			g.mu.Lock()
			g.buf = append(g.buf, b[:n]...)
			if err != nil {
				g.err = err
			}
			g.cond.Broadcast()
			g.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return g
}

func (g *gate) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for (g.held || len(g.buf) == 0) && g.err == nil {
		g.cond.Wait()
	}
	if len(g.buf) == 0 || g.held {
		return 0, g.err
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

func (g *gate) hold(on bool) {
	g.mu.Lock()
	g.held = on
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Coming in, the bridge has up to max_inflight cloud messages on their way
// to the local broker at once: while the local broker's acknowledgements
// are held back, exactly that many reach it (and its subscribers); once they
// flow, every message arrives locally once, in order, and the cloud has its
// acknowledgements.
func TestWindowInUsedAndBounded(t *testing.T) {
	cases := []struct {
		proto  string
		window int
	}{{"5", 8}, {"3.1.1", 8}, {"5", 1}}
	for _, c := range cases {
		t.Run(fmt.Sprintf("protocol %s/max_inflight %d", c.proto, c.window), func(t *testing.T) {
			const n = 300
			m := startMosquitto(t)
			g := startGateway(t, t.TempDir())
			cfg := basicConfig(m.URL())
			cfg.Protocol, cfg.MaxInflight = c.proto, c.window
			cfg.Topics = []Rule{{Pattern: "#", Direction: DirIn, QoS: 1, LocalPrefix: "commands/", RemotePrefix: "cloud/cmd/"}}
			local := localSubscriber(t, g, "commands/#")
			b, err := New(cfg, Options{GatewayID: "gw1", Broker: g.srv, Logger: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			var gt *gate
			b.wrapLocal = func(c net.Conn) net.Conn {
				gt = newGate(c)
				return gt
			}
			if err := b.Start(testCtx(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { stopBridge(t, b) })
			waitState(t, b, "connected", 10*time.Second)
			waitSubscribed(t, b, 10*time.Second)
			cloud := connect(t, client.Options{URL: m.URL(), ClientID: "cloud-app", Username: cloudUser, Password: cloudPass, CleanStart: true})

			gt.hold(true)
			publishSeq(t, cloud, "cloud/cmd/seq", 1, 0, n)
			local.waitFor(t, 20*time.Second, "a window stored locally", count(c.window))
			// Nothing more goes while nothing is acknowledged.
			time.Sleep(200 * time.Millisecond)
			if got := len(local.snapshot()); got != c.window {
				t.Errorf("%d reached the local broker with none acknowledged, want %d", got, c.window)
			}
			if st := b.Stats(); st.InflightIn != c.window || st.Received != 0 {
				t.Errorf("in flight %d (want %d), received %d (want 0)", st.InflightIn, c.window, st.Received)
			}
			gt.hold(false)
			got := local.waitFor(t, 60*time.Second, "all arrived locally", arrived(n))
			if dups := checkSequence(t, got, n); dups != 0 {
				t.Errorf("%d repeats without a reconnection", dups)
			}
			deadline := time.Now().Add(testenv.Scale(10 * time.Second))
			for st := b.Stats(); st.Received != n || st.InflightIn != 0; st = b.Stats() {
				if time.Now().After(deadline) {
					t.Fatalf("received %d (want %d), in flight %d", st.Received, n, st.InflightIn)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// Coming in, a backlog the cloud kept for the bridge's session drains with
// the window in use; a link cut in the middle loses nothing and keeps the
// order locally (what was stored but not yet acknowledged to the cloud comes
// again, as QoS 1 allows).
func TestWindowInLinkCutMidDrain(t *testing.T) {
	for _, proto := range []string{"5", "3.1.1"} {
		t.Run("protocol "+proto, func(t *testing.T) {
			const n = 1000
			m := startMosquitto(t)
			p := testproxy.New(t, m.Addr())
			g := startGateway(t, t.TempDir())
			cfg := basicConfig(p.URL())
			cfg.Protocol = proto
			cfg.Topics = []Rule{{Pattern: "#", Direction: DirIn, QoS: 1, LocalPrefix: "commands/", RemotePrefix: "cloud/cmd/"}}
			local := localSubscriber(t, g, "commands/#")
			b := startBridge(t, g, cfg)
			waitState(t, b, "connected", 10*time.Second)
			waitSubscribed(t, b, 10*time.Second)
			p.Cut(true)
			waitLost(t, b, 10*time.Second)
			cloud := connect(t, client.Options{URL: m.URL(), ClientID: "cloud-app", Username: cloudUser, Password: cloudPass, CleanStart: true})
			publishSeq(t, cloud, "cloud/cmd/seq", 1, 0, n)
			p.Restore()
			local.waitFor(t, 60*time.Second, "a quarter arrived locally", arrived(n/4))
			p.Cut(true)
			waitLost(t, b, 10*time.Second)
			p.Restore()
			got := local.waitFor(t, 60*time.Second, "all arrived locally", arrived(n))
			dups := checkSequence(t, got, n)
			deadline := time.Now().Add(testenv.Scale(10 * time.Second))
			for st := b.Stats(); st.Received < n || st.InflightIn != 0; st = b.Stats() {
				if time.Now().After(deadline) {
					t.Fatalf("received %d (want %d at least), in flight %d", st.Received, n, st.InflightIn)
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("%d messages, %d repeated locally, stats %+v", n, dups, b.Stats())
		})
	}
}

// A bridge stopped while a QoS 2 cloud message is between PUBLISH and
// PUBCOMP on its local connection leaves that packet id awaiting PUBREL in
// its persistent local session. The next bridge (after a restart, a reload
// or a power cut) starts its packet ids afresh: the id it reuses must not
// make the local broker take a new message for a duplicate of the old one.
func TestWindowInQoS2IdsOfAStoppedBridgeReleased(t *testing.T) {
	for _, restartGateway := range []bool{false, true} {
		name := "bridge restarted"
		if restartGateway {
			name = "gateway restarted"
		}
		t.Run(name, func(t *testing.T) {
			m := startMosquitto(t)
			dir := t.TempDir()
			g := startGateway(t, dir)
			cfg := basicConfig(m.URL())
			cfg.Topics = []Rule{{Pattern: "#", Direction: DirIn, QoS: 2, LocalPrefix: "commands/", RemotePrefix: "cloud/cmd/"}}
			local := localSubscriber(t, g, "commands/#")
			cloud := connect(t, client.Options{URL: m.URL(), ClientID: "cloud-app", Username: cloudUser, Password: cloudPass, CleanStart: true})

			b1, err := New(cfg, Options{GatewayID: "gw1", Broker: g.srv, Logger: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			var gt *gate
			b1.wrapLocal = func(c net.Conn) net.Conn {
				gt = newGate(c)
				return gt
			}
			if err := b1.Start(testCtx(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { stopBridge(t, b1) })
			waitState(t, b1, "connected", 10*time.Second)
			waitSubscribed(t, b1, 10*time.Second)
			publishSeq(t, cloud, "cloud/cmd/seq", 2, 0, 10) // local packet ids 1 to 10
			local.waitFor(t, 10*time.Second, "0..9 locally", arrived(10))
			deadline := time.Now().Add(testenv.Scale(10 * time.Second))
			for b1.Stats().Received != 10 {
				if time.Now().After(deadline) {
					t.Fatalf("received %d, want 10", b1.Stats().Received)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// The PUBREC for the next one (local id 11) is never read.
			gt.hold(true)
			publishSeq(t, cloud, "cloud/cmd/seq", 2, 10, 1)
			local.waitFor(t, 10*time.Second, "10 locally", arrived(11))
			stopBridge(t, b1)
			if restartGateway {
				g.shutdown()
				g = startGateway(t, dir)
				local = localSubscriber(t, g, "commands/#")
			}

			b2 := startBridge(t, g, cfg)
			waitState(t, b2, "connected", 10*time.Second)
			// 10 comes again from the cloud, then 11 to 30: local ids 1
			// to 21, id 11 among them.
			publishSeq(t, cloud, "cloud/cmd/seq", 2, 11, 20)
			got := local.waitFor(t, 10*time.Second, "11..30 locally", func(ms []*client.Message) bool {
				seen := map[string]bool{}
				for _, m := range ms {
					seen[string(m.Payload)] = true
				}
				for i := 11; i <= 30; i++ {
					if !seen[strconv.Itoa(i)] {
						return false
					}
				}
				return true
			})
			t.Logf("%d messages locally, stats %+v", len(got), b2.Stats())
		})
	}
}
