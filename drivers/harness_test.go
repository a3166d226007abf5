package drivers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"gatewayd/broker"
	"gatewayd/broker/client"
	"gatewayd/internal/testenv"

	"go.uber.org/goleak"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
)

// waitLimit bounds every wait in these tests; it is a hang guard, not a
// timing assertion.
// Under qemu-user (make test-arm) it is stretched by testenv.Scale.
var waitLimit = testenv.Scale(15 * time.Second)

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("DRIVERS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// noLeaks fails the test if it leaves goroutines behind. Call it first, so
// its check runs after every other cleanup.
func noLeaks(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// testBroker is gatewayd's broker on a loopback port; dial connects to it
// in process and remembers the connections, so a test can cut one.
type testBroker struct {
	srv *broker.Server
	mu  sync.Mutex
	// conns by the order they were dialed
	conns []net.Conn
	// refuse makes dial fail (the broker is unreachable).
	refuse bool
}

func startBroker(t *testing.T) *testBroker {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Address: "127.0.0.1:0"}}
	cfg.SysInterval = 0
	s, err := broker.New(cfg, broker.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	b := &testBroker{srv: s}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		s.Shutdown(ctx)
	})
	return b
}

func (b *testBroker) dial(ctx context.Context) (net.Conn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refuse {
		return nil, errors.New("test: broker unreachable")
	}
	c, s := net.Pipe()
	b.conns = append(b.conns, c)
	go b.srv.ServeConn(s, "test")
	return c, nil
}

func (b *testBroker) setRefuse(v bool) {
	b.mu.Lock()
	b.refuse = v
	b.mu.Unlock()
}

// cutAll closes every connection dialed so far, as a network failure would.
func (b *testBroker) cutAll() {
	b.mu.Lock()
	cs := b.conns
	b.conns = nil
	b.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// msg is one message a subscriber received.
type msg struct {
	Topic   string
	Payload string
	Retain  bool
}

// subscriber records everything published under its filters.
type subscriber struct {
	t    *testing.T
	cl   *client.Client
	mu   sync.Mutex
	cond *sync.Cond
	msgs []msg
}

func subscribe(t *testing.T, b *testBroker, filters ...string) *subscriber {
	t.Helper()
	s := &subscriber{t: t}
	s.cond = sync.NewCond(&s.mu)
	cl, err := client.New(client.Options{Dialer: b.dial, ClientID: fmt.Sprintf("test-sub-%d", time.Now().UnixNano()), CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	var subs []client.Subscription
	for _, f := range filters {
		subs = append(subs, client.Subscription{Filter: f, QoS: 1, RetainAsPublished: true})
	}
	if _, err := cl.Subscribe(ctx, func(m *client.Message) {
		s.mu.Lock()
		s.msgs = append(s.msgs, msg{Topic: m.Topic, Payload: string(m.Payload), Retain: m.Retain})
		s.cond.Broadcast()
		s.mu.Unlock()
	}, subs...); err != nil {
		t.Fatal(err)
	}
	s.cl = cl
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		cl.Disconnect(ctx)
	})
	return s
}

// waitFor returns the first message from index from on that satisfies ok,
// and its index; it fails the test after waitLimit.
func (s *subscriber) waitFor(from int, what string, ok func(msg) bool) (msg, int) {
	s.t.Helper()
	deadline := time.Now().Add(waitLimit)
	timer := time.AfterFunc(waitLimit, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		for i := from; i < len(s.msgs); i++ {
			if ok(s.msgs[i]) {
				return s.msgs[i], i
			}
		}
		if time.Now().After(deadline) {
			var got []string
			for _, m := range s.msgs {
				got = append(got, fmt.Sprintf("%s=%q", m.Topic, m.Payload))
			}
			s.t.Fatalf("no message %s; got:\n%s", what, strings.Join(got, "\n"))
		}
		s.cond.Wait()
	}
}

// expect waits for payload on topic, from message index from on.
func (s *subscriber) expect(from int, topic, payload string) int {
	s.t.Helper()
	_, i := s.waitFor(from, fmt.Sprintf("%s=%q", topic, payload), func(m msg) bool {
		return m.Topic == topic && m.Payload == payload
	})
	return i
}

// next waits for any message on topic from index from on.
func (s *subscriber) next(from int, topic string) (msg, int) {
	s.t.Helper()
	return s.waitFor(from, "on "+topic, func(m msg) bool { return m.Topic == topic })
}

// payloads returns the payloads received on topic so far, in order.
func (s *subscriber) payloads(topic string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.msgs {
		if m.Topic == topic {
			out = append(out, m.Payload)
		}
	}
	return out
}

func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// fakeHardware hands out test doubles by name.
type fakeHardware struct {
	mu    sync.Mutex
	pins  map[string]gpio.PinIO
	buses map[string]i2c.Bus
	root  string
	w1    string
}

func (h *fakeHardware) I2C(bus string) (i2c.Bus, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if b, ok := h.buses[bus]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("test: no I2C bus %q", bus)
}

func (h *fakeHardware) Pin(name string) (gpio.PinIO, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p, ok := h.pins[name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("test: no pin %q", name)
}

func (h *fakeHardware) Serial(port string, baud int) (io.ReadWriteCloser, error) {
	return nil, fmt.Errorf("test: no serial port %q", port)
}

func (h *fakeHardware) OneWireDir() string { return h.w1 }
func (h *fakeHardware) Root() string       { return h.root }

// startRunner runs cfg until the test ends (or stop is called) and returns
// the runner and a stop function that waits for Run to return.
func startRunner(t *testing.T, b *testBroker, cfg Config, hw Hardware) (*Runner, func()) {
	t.Helper()
	if hw == nil {
		hw = &fakeHardware{}
	}
	r, err := NewRunner(cfg, "gw1", hw, b.dial, BoardInfo{Model: "Raspberry Pi 4 Model B Rev 1.4", Serial: "10000000abcdef01"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(waitLimit):
				t.Errorf("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

// testSensor is a Sensor whose readings the test controls.
type testSensor struct {
	mu    sync.Mutex
	read  func(n int) ([]Reading, error)
	n     int
	infos []ChannelInfo
}

func (s *testSensor) Channels() []ChannelInfo { return s.infos }
func (s *testSensor) Close() error            { return nil }
func (s *testSensor) Read(ctx context.Context) ([]Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return s.read(s.n)
}

var (
	testSensorsMu sync.Mutex
	testSensors   = map[string]*testSensor{}
)

// useTestSensor makes the driver "test-sensor" open s for device name.
func useTestSensor(t *testing.T, name string, s *testSensor) {
	testSensorsMu.Lock()
	testSensors[name] = s
	testSensorsMu.Unlock()
	t.Cleanup(func() {
		testSensorsMu.Lock()
		delete(testSensors, name)
		testSensorsMu.Unlock()
	})
}

func init() {
	Register("test-sensor", func(cfg DeviceConfig, env Env) (Device, error) {
		testSensorsMu.Lock()
		defer testSensorsMu.Unlock()
		s, ok := testSensors[cfg.Name]
		if !ok {
			return nil, errors.New("test: no such sensor attached")
		}
		return s, nil
	})
}

func ptr[T any](v T) *T { return &v }
