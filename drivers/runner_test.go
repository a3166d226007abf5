package drivers

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func tempSensor(values ...float64) *testSensor {
	return &testSensor{
		infos: []ChannelInfo{{Channel: "temperature", Unit: "°C", DeviceClass: "temperature", StateClass: "measurement", Precision: 2}},
		read: func(n int) ([]Reading, error) {
			v := values[min(n, len(values))-1]
			return []Reading{{Channel: "temperature", Value: v, Unit: "°C"}}, nil
		},
	}
}

func oneDevice(d DeviceConfig) Config {
	cfg := DefaultConfig()
	cfg.Devices = []DeviceConfig{d}
	return cfg
}

func TestRunnerPublishesOnlineAndValuesWithScaleOffsetPrecision(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	useTestSensor(t, "porch", tempSensor(21.456))
	sub := subscribe(t, b, "gatewayd/gw1/porch/#")
	startRunner(t, b, oneDevice(DeviceConfig{
		Name: "porch", Driver: "test-sensor", Interval: time.Hour,
		Channels: map[string]ChannelConfig{"temperature": {Scale: ptr(2.0), Offset: 1, Precision: ptr(1)}},
	}), nil)
	sub.expect(0, "gatewayd/gw1/porch/status", "online")
	sub.expect(0, "gatewayd/gw1/porch/temperature", "43.9") // 21.456*2+1 = 43.912
	late := subscribe(t, b, "gatewayd/gw1/porch/status")
	if m, _ := late.next(0, "gatewayd/gw1/porch/status"); m.Payload != "online" || !m.Retain {
		t.Errorf("retained availability = %+v, want retained online", m)
	}
}

func TestRunnerDriverPrecisionAndCustomTopic(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	useTestSensor(t, "attic", tempSensor(19.0))
	sub := subscribe(t, b, "house/attic/#")
	startRunner(t, b, oneDevice(DeviceConfig{Name: "attic", Driver: "test-sensor", Interval: time.Hour, Topic: "house/attic"}), nil)
	sub.expect(0, "house/attic/temperature", "19.00")
	sub.expect(0, "house/attic/status", "online")
}

func TestRunnerJSONPayload(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	useTestSensor(t, "porch", tempSensor(21.44))
	sub := subscribe(t, b, "gatewayd/gw1/porch/temperature")
	cfg := oneDevice(DeviceConfig{Name: "porch", Driver: "test-sensor", Interval: time.Hour,
		Channels: map[string]ChannelConfig{"temperature": {Precision: ptr(1)}}})
	cfg.Payload = PayloadJSON
	before := time.Now().UnixMilli()
	startRunner(t, b, cfg, nil)
	m, _ := sub.next(0, "gatewayd/gw1/porch/temperature")
	var got struct {
		Value *float64 `json:"value"`
		Unit  string   `json:"unit"`
		TS    int64    `json:"ts"`
	}
	if err := json.Unmarshal([]byte(m.Payload), &got); err != nil {
		t.Fatalf("payload %q: %v", m.Payload, err)
	}
	if got.Value == nil || *got.Value != 21.4 || got.Unit != "°C" {
		t.Errorf("payload %q: want value 21.4 unit °C", m.Payload)
	}
	if got.TS < before || got.TS > time.Now().UnixMilli() {
		t.Errorf("ts %d is not the time of the reading", got.TS)
	}
	if m.Retain {
		t.Errorf("a measurement was published retained")
	}
}

func TestRunnerFailingSensorGoesOfflineOthersContinue(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	bad := &testSensor{
		infos: []ChannelInfo{{Channel: "temperature", Unit: "°C", Precision: 1}},
		read: func(n int) ([]Reading, error) {
			if n == 1 {
				return []Reading{{Channel: "temperature", Value: 5}}, nil
			}
			return nil, errors.New("i2c: remote I/O error")
		},
	}
	good := &testSensor{
		infos: []ChannelInfo{{Channel: "temperature", Unit: "°C", Precision: 0}},
		read: func(n int) ([]Reading, error) {
			return []Reading{{Channel: "temperature", Value: float64(n)}}, nil
		},
	}
	useTestSensor(t, "bad", bad)
	useTestSensor(t, "good", good)
	sub := subscribe(t, b, "gatewayd/gw1/#")
	cfg := DefaultConfig()
	cfg.Devices = []DeviceConfig{
		{Name: "bad", Driver: "test-sensor", Interval: 100 * time.Millisecond},
		{Name: "good", Driver: "test-sensor", Interval: 100 * time.Millisecond},
		{Name: "absent", Driver: "test-sensor", Interval: 100 * time.Millisecond}, // fails to open
	}
	r, stop := startRunner(t, b, cfg, nil)
	i := sub.expect(0, "gatewayd/gw1/bad/status", "online")
	sub.expect(i, "gatewayd/gw1/bad/status", "offline")
	sub.expect(0, "gatewayd/gw1/absent/status", "offline")
	// good keeps publishing after bad went offline
	j := sub.expect(i, "gatewayd/gw1/good/temperature", "3")
	sub.expect(j, "gatewayd/gw1/good/temperature", "4")
	st := r.Stats()
	if st[0].Name != "bad" || st[0].Online || st[0].Errors == 0 || st[0].Reads != 1 || st[0].LastError == "" {
		t.Errorf("bad stats = %+v", st[0])
	}
	if st[1].Name != "good" || !st[1].Online || st[1].Reads < 4 || st[1].Errors != 0 || st[1].LastSuccess.IsZero() {
		t.Errorf("good stats = %+v", st[1])
	}
	if st[2].Online || st[2].Errors == 0 {
		t.Errorf("absent stats = %+v", st[2])
	}
	n := sub.count()
	stop()
	sub.expect(n, "gatewayd/gw1/good/status", "offline")
}

func TestRunnerSensorRecoversAndComesBackOnline(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	s := &testSensor{
		infos: []ChannelInfo{{Channel: "v", Precision: 0}},
		read: func(n int) ([]Reading, error) {
			if n == 2 || n == 3 {
				return nil, errors.New("crc mismatch")
			}
			return []Reading{{Channel: "v", Value: float64(n)}}, nil
		},
	}
	useTestSensor(t, "s", s)
	sub := subscribe(t, b, "gatewayd/gw1/s/#")
	startRunner(t, b, oneDevice(DeviceConfig{Name: "s", Driver: "test-sensor", Interval: 100 * time.Millisecond}), nil)
	i := sub.expect(0, "gatewayd/gw1/s/v", "1")
	i = sub.expect(i, "gatewayd/gw1/s/status", "offline")
	i = sub.expect(i, "gatewayd/gw1/s/status", "online")
	sub.expect(i, "gatewayd/gw1/s/v", "4")
}

func TestRunnerWillSaysOfflineWhenTheConnectionDies(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	useTestSensor(t, "porch", tempSensor(20))
	sub := subscribe(t, b, "gatewayd/gw1/porch/status")
	startRunner(t, b, oneDevice(DeviceConfig{Name: "porch", Driver: "test-sensor", Interval: time.Hour}), nil)
	i := sub.expect(0, "gatewayd/gw1/porch/status", "online")
	// The device's connection (every one after the subscriber's) dies, and
	// the broker stays out of reach for a while.
	b.setRefuse(true)
	b.mu.Lock()
	conns := b.conns[1:]
	b.conns = b.conns[:1]
	b.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	i = sub.expect(i, "gatewayd/gw1/porch/status", "offline") // the will
	b.setRefuse(false)
	sub.expect(i, "gatewayd/gw1/porch/status", "online") // reconnected
}

func TestRunnerShutdownPublishesOffline(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	useTestSensor(t, "porch", tempSensor(20))
	sub := subscribe(t, b, "gatewayd/gw1/porch/status")
	_, stop := startRunner(t, b, oneDevice(DeviceConfig{Name: "porch", Driver: "test-sensor", Interval: time.Hour}), nil)
	i := sub.expect(0, "gatewayd/gw1/porch/status", "online")
	stop()
	sub.expect(i, "gatewayd/gw1/porch/status", "offline")
}

func TestFormatPlainAndJSON(t *testing.T) {
	ts := time.UnixMilli(1700000000123)
	cases := []struct {
		mode string
		rd   Reading
		unit string
		prec int
		want string
	}{
		{PayloadPlain, Reading{Value: 21.456}, "°C", 1, "21.5"},
		{PayloadPlain, Reading{Value: 21.4}, "", AnyPrecision, "21.4"},
		{PayloadPlain, Reading{Value: 3}, "", 0, "3"},
		{PayloadPlain, Reading{Text: "ON", IsText: true}, "", 0, "ON"},
		{PayloadJSON, Reading{Value: 21.44, Time: ts}, "°C", 1, `{"value":21.4,"unit":"°C","ts":1700000000123}`},
		{PayloadJSON, Reading{Text: `O"N`, IsText: true, Time: ts}, "", 0, `{"value":"O\"N","ts":1700000000123}`},
	}
	for _, c := range cases {
		if got := string(format(c.mode, c.rd, c.unit, c.prec)); got != c.want {
			t.Errorf("format(%s, %+v, %q, %d) = %s, want %s", c.mode, c.rd, c.unit, c.prec, got, c.want)
		}
		if c.mode == PayloadJSON && !json.Valid([]byte(c.want)) {
			t.Errorf("%s is not JSON", c.want)
		}
	}
}

func TestBackoffDoublesToACap(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	for n, w := range want {
		if got := backoff(time.Second, n); got != w {
			t.Errorf("backoff(1s, %d) = %v, want %v", n, got, w)
		}
	}
	if got := backoff(time.Second, 40); got != MaxBackoff {
		t.Errorf("backoff(1s, 40) = %v, want %v", got, MaxBackoff)
	}
	if got := backoff(time.Hour, 3); got != time.Hour {
		t.Errorf("an interval above the cap is its own cap: got %v", got)
	}
}

// closeCounter is a testSensor that counts how often it was closed.
type closeCounter struct {
	*testSensor
	closed chan struct{}
}

func (c *closeCounter) Close() error { c.closed <- struct{}{}; return nil }

func TestRunnerReopensASensorAfterRepeatedFailures(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	var opens int
	s := &testSensor{
		infos: []ChannelInfo{{Channel: "co2", Precision: 0}},
		read: func(n int) ([]Reading, error) {
			if n >= 2 && n <= 4 { // the sensor lost power after its first read
				return nil, errors.New("data not ready")
			}
			return []Reading{{Channel: "co2", Value: float64(400 + n)}}, nil
		},
	}
	cc := &closeCounter{testSensor: s, closed: make(chan struct{}, 8)}
	var mu sync.Mutex
	reopenFactory.Store(func() (Device, error) {
		mu.Lock()
		opens++
		mu.Unlock()
		return cc, nil
	})
	sub := subscribe(t, b, "gatewayd/gw1/co2/#")
	_, stop := startRunner(t, b, oneDevice(DeviceConfig{Name: "co2", Driver: "test-reopen", Interval: 100 * time.Millisecond}), nil)
	i := sub.expect(0, "gatewayd/gw1/co2/co2", "401")
	i = sub.expect(i, "gatewayd/gw1/co2/status", "offline")
	<-cc.closed // closed after three failed reads, then opened again
	i = sub.expect(i, "gatewayd/gw1/co2/status", "online")
	sub.expect(i, "gatewayd/gw1/co2/co2", "405")
	stop()
	mu.Lock()
	defer mu.Unlock()
	if opens != 2 {
		t.Errorf("opened %d times, want 2", opens)
	}
}

// reopenFactory is what the driver "test-reopen" opens.
var reopenFactory atomic.Value // func() (Device, error)

func init() {
	Register("test-reopen", func(DeviceConfig, Env) (Device, error) {
		return reopenFactory.Load().(func() (Device, error))()
	})
}

func TestNewRunnerRefusesWhatCannotWork(t *testing.T) {
	b := &testBroker{}
	for _, c := range []struct {
		cfg  Config
		gw   string
		dial bool
		want string
	}{
		{DefaultConfig(), "gw/1", true, "gateway id"},
		{DefaultConfig(), "", true, "gateway id"},
		{DefaultConfig(), "gw1", false, "no broker"},
		{oneDevice(DeviceConfig{Name: "x", Driver: "nope"}), "gw1", true, "unknown driver"},
	} {
		var dial = b.dial
		if !c.dial {
			dial = nil
		}
		_, err := NewRunner(c.cfg, c.gw, &fakeHardware{}, dial, BoardInfo{}, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewRunner(gw %q): %v, want %q", c.gw, err, c.want)
		}
	}
}
