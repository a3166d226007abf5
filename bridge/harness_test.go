package bridge

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"gatewayd/broker"
	"gatewayd/broker/client"
	"gatewayd/broker/packet"
	"gatewayd/broker/state"
	"gatewayd/internal/testenv"
	"gatewayd/internal/testmosquitto"
)

var full = flag.Bool("bridge.full", false, "run the long outage variant (10,000 messages, 60 s outage)")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	cloudUser = "gw"
	cloudPass = "s3cret-pass"
)

// startMosquitto starts the cloud: a real mosquitto with password
// authentication, a plain and a TLS listener, and persistence.
func startMosquitto(t testing.TB) *testmosquitto.Broker { return startMosquittoAuth(t, true) }

// startMosquittoAuth starts mosquitto with password authentication, or
// without (anonymous clients, any user name and password accepted).
func startMosquittoAuth(t testing.TB, passwords bool) *testmosquitto.Broker {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		t.Skip("mosquitto is not installed (apt-get install mosquitto)")
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-b", "-c", pw, cloudUser, cloudPass).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	auth := "allow_anonymous false\npassword_file " + pw
	if !passwords {
		auth = "allow_anonymous true"
	}
	conf := fmt.Sprintf(`per_listener_settings false
%s
persistence true
persistence_location %s/
autosave_interval 0
max_queued_messages 0
max_inflight_messages 0
%s
`, auth, dir, logTypes())
	return testmosquitto.Start(t, testmosquitto.Options{Dir: dir, Config: conf, TLS: true})
}

func logTypes() string {
	if os.Getenv("BRIDGE_MOSQUITTO_LOG_ALL") != "" {
		return "log_type all"
	}
	return "log_type error\nlog_type warning\nlog_type notice"
}

// gateway is the embedded broker with a durable store in dir.
type gateway struct {
	t   testing.TB
	dir string
	srv *broker.Server
	st  *state.Durable
}

func startGateway(t testing.TB, dir string) *gateway { return startGatewayWith(t, dir, nil) }

// startGatewayWith starts the gateway's broker with the defaults changed by
// configure (which may be nil).
func startGatewayWith(t testing.TB, dir string, configure func(*broker.Config)) *gateway {
	t.Helper()
	st, err := state.OpenDurable(dir, state.DurableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Address: "127.0.0.1:0"}}
	cfg.SysInterval = 0
	if configure != nil {
		configure(&cfg)
	}
	srv, err := broker.New(cfg, broker.Options{Store: st, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gateway{t: t, dir: dir, srv: srv, st: st}
	t.Cleanup(g.shutdown)
	return g
}

func (g *gateway) URL() string { return "mqtt://" + g.srv.Addrs()[0].String() }

func (g *gateway) shutdown() {
	if g.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(10*time.Second))
	defer cancel()
	g.srv.Shutdown(ctx)
	g.srv = nil
}

func quietLog() *slog.Logger {
	if testing.Verbose() && os.Getenv("BRIDGE_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(d))
	t.Cleanup(cancel)
	return ctx
}

// connect makes a client and connects it; it is disconnected at the end.
func connect(t testing.TB, o client.Options) *client.Client {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLog()
	}
	c, err := client.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testCtx(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c.Disconnect(ctx)
	})
	return c
}

// recorder collects the messages a subscriber receives.
type recorder struct {
	c    *client.Client // the subscriber, for cloudSubscriber
	opts client.Options
	mu   sync.Mutex
	msgs []*client.Message
	more chan struct{}
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{}, 1)} }

func (r *recorder) handle(m *client.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
}

func (r *recorder) snapshot() []*client.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*client.Message(nil), r.msgs...)
}

// waitFor waits until cond holds for what was received, or fails after d.
func (r *recorder) waitFor(t testing.TB, d time.Duration, what string, cond func([]*client.Message) bool) []*client.Message {
	t.Helper()
	d = testenv.Scale(d)
	deadline := time.After(d)
	for {
		got := r.snapshot()
		if cond(got) {
			return got
		}
		select {
		case <-r.more:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: not after %v (received %d%s)", what, d, len(got), missing(got))
		}
	}
}

// cloudSubscriber is a client of mosquitto with a persistent session (ids
// are unique per test, so the first connection finds none): what
// the bridge delivered reaches it even across its own or mosquitto's
// restarts. That is what "arrived upstream" means in these tests.
func cloudSubscriber(t testing.TB, m *testmosquitto.Broker, id string, filters ...string) *recorder {
	t.Helper()
	rec := newRecorder()
	rec.opts = client.Options{
		URL: m.URL(), ClientID: id, Username: cloudUser, Password: cloudPass,
		// MQTT 3.1.1 with a persistent session: mosquitto 2.0.11 was seen
		// here to lose what it had queued for an MQTT 5 session (session
		// expiry set) across its own restart, and not for a 3.1.1 one.
		Protocol: packet.V311, AutoReconnect: true,
		Backoff:        client.Backoff{Base: 50 * time.Millisecond, Cap: 500 * time.Millisecond},
		DefaultHandler: rec.handle,
	}
	c := connect(t, rec.opts)
	rec.c = c
	var subs []client.Subscription
	for _, f := range filters {
		subs = append(subs, client.Subscription{Filter: f, QoS: 2})
	}
	if _, err := c.Subscribe(testCtx(t, 10*time.Second), rec.handle, subs...); err != nil {
		t.Fatal(err)
	}
	return rec
}

// offline disconnects a cloud subscriber: its session stays on mosquitto,
// which queues what arrives for it.
func (r *recorder) offline(t testing.TB) {
	t.Helper()
	if err := r.c.Disconnect(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// online reconnects it to its session: mosquitto sends what it queued.
func (r *recorder) online(t testing.TB) {
	t.Helper()
	o := r.opts
	o.CleanStart = false
	r.c = connect(t, o)
}

// localClient connects to the gateway's broker.
func localClient(t testing.TB, g *gateway, id string) *client.Client {
	return connect(t, client.Options{URL: g.URL(), ClientID: id, CleanStart: true})
}

// localSubscriber records what a local client subscribed to filter at QoS 1
// on g receives.
func localSubscriber(t testing.TB, g *gateway, filter string) *recorder {
	t.Helper()
	local := newRecorder()
	lc := localClient(t, g, "local-sub")
	if _, err := lc.Subscribe(testCtx(t, 5*time.Second), local.handle, client.Subscription{Filter: filter, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	return local
}

// startBridge starts a bridge on g; it is stopped at the end of the test
// (Stop twice is harmless).
func startBridge(t testing.TB, g *gateway, cfg Config) *Bridge {
	t.Helper()
	b, err := New(cfg, Options{GatewayID: "gw1", Broker: g.srv, Logger: quietLog(), SysInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b.keepSendLog = true
	if err := b.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopBridge(t, b) })
	return b
}

func stopBridge(t testing.TB, b *Bridge) {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(15*time.Second))
	defer cancel()
	if err := b.Stop(ctx); err != nil {
		t.Errorf("bridge stop: %v", err)
	}
}

// publishSeq publishes n messages "<prefix><i>" on topic at qos, pipelined,
// and waits until the local broker acknowledged them all (stored).
func publishSeq(t testing.TB, c *client.Client, topic string, qos byte, from, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := from; i < from+n; i++ {
		wg.Add(1)
		c.PublishAsync(&client.Message{Topic: topic, Payload: []byte(strconv.Itoa(i)), QoS: qos}, func(err error) {
			if err != nil {
				errs <- err
			}
			wg.Done()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("local publish: %v", err)
	}
}

// checkSequence checks that msgs carry 0..n-1 in order, each at least once,
// where a repeat is only a redelivery of something already seen (QoS 1).
func checkSequence(t testing.TB, msgs []*client.Message, n int) (dups int) {
	t.Helper()
	next := 0
	for _, m := range msgs {
		v, err := strconv.Atoi(string(m.Payload))
		if err != nil {
			t.Fatalf("payload %q", m.Payload)
		}
		switch {
		case v == next:
			next++
		case v < next:
			dups++
		default:
			t.Fatalf("out of order or lost: got %d, want %d (after %d messages)", v, next, len(msgs))
		}
	}
	if next != n {
		t.Fatalf("arrived %d of %d", next, n)
	}
	return dups
}

// missing describes the gaps in the sequence numbers received, if any.
func missing(ms []*client.Message) string {
	seen := map[int]bool{}
	top := -1
	for _, m := range ms {
		if v, err := strconv.Atoi(string(m.Payload)); err == nil {
			seen[v] = true
			top = max(top, v)
		}
	}
	var gaps []string
	for i := 0; i <= top && len(gaps) < 20; i++ {
		if !seen[i] {
			j := i
			for j+1 <= top && !seen[j+1] {
				j++
			}
			gaps = append(gaps, fmt.Sprintf("%d-%d", i, j))
			i = j
		}
	}
	if len(gaps) == 0 {
		return ""
	}
	return fmt.Sprintf("; highest %d, missing %v", top, gaps)
}

func count(n int) func([]*client.Message) bool {
	return func(ms []*client.Message) bool { return len(ms) >= n }
}

// arrived reports whether the payloads include every value below n.
func arrived(n int) func([]*client.Message) bool {
	return func(ms []*client.Message) bool {
		next := 0
		for _, m := range ms {
			if v, err := strconv.Atoi(string(m.Payload)); err == nil && v == next {
				next++
			}
		}
		return next >= n
	}
}

// waitState waits for the bridge's cloud state.
func waitState(t testing.TB, b *Bridge, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for b.Stats().State != want {
		if time.Now().After(deadline) {
			t.Fatalf("bridge state %s, want %s", b.Stats().State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSubscribed waits until the cloud has acknowledged the bridge's
// subscription for its in rules: from then on the cloud keeps what matches
// them for the bridge's session, connected or not (before, it drops it).
func waitSubscribed(t testing.TB, b *Bridge, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for b.subscribed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the cloud has not acknowledged the in subscription (state %s)", b.Stats().State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLost waits until the bridge no longer counts its cloud connection as
// up: "disconnected", or already "connecting" again (a reconnect attempt can
// follow the loss faster than a poll sees the state in between).
func waitLost(t testing.TB, b *Bridge, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for st := b.Stats().State; st != "disconnected" && st != "connecting"; st = b.Stats().State {
		if time.Now().After(deadline) {
			t.Fatalf("bridge state %s, want disconnected or connecting", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitQueued waits until the bridge's local queue holds n messages.
func waitQueued(t testing.TB, b *Bridge, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(d))
	for b.Stats().QueuedMessages != n {
		if time.Now().After(deadline) {
			t.Fatalf("queued %d, want %d", b.Stats().QueuedMessages, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// basicConfig bridges sensors/# out to gw1/... on the cloud via url.
func basicConfig(url string) Config {
	return Config{
		Name: "cloud", URL: url, Username: cloudUser, Password: cloudPass,
		KeepAlive: 2 * time.Second,
		Backoff:   Backoff{Base: 50 * time.Millisecond, Cap: 300 * time.Millisecond},
		Topics:    []Rule{{Pattern: "#", Direction: DirOut, QoS: 1, LocalPrefix: "sensors/", RemotePrefix: "gw1/sensors/"}},
	}
}
