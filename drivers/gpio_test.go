package drivers

import (
	"context"
	"testing"
	"time"

	"gatewayd/broker/client"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

func gpioHW(pins ...*gpiotest.Pin) *fakeHardware {
	hw := &fakeHardware{pins: map[string]gpio.PinIO{}}
	for _, p := range pins {
		hw.pins[p.N] = p
	}
	return hw
}

// publisher is a client that sends commands, as Home Assistant would.
func publisher(t *testing.T, b *testBroker) func(topic, payload string) {
	cl, err := client.New(client.Options{Dialer: b.dial, ClientID: "commander", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		cl.Disconnect(ctx)
	})
	return func(topic, payload string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		if err := cl.Publish(ctx, &client.Message{Topic: topic, Payload: []byte(payload), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGPIOInPublishesRetainedStateAndEdgeCount(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	pin := &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level)}
	sub := subscribe(t, b, "gatewayd/gw1/door/#")
	startRunner(t, b, oneDevice(DeviceConfig{Name: "door", Driver: "gpio-in", Pin: "GPIO17", Pull: "up"}), gpioHW(pin))
	// pulled up: the line reads high
	i := sub.expect(0, "gatewayd/gw1/door/state", "ON")
	sub.expect(0, "gatewayd/gw1/door/count", "0")
	pin.EdgesChan <- gpio.Low
	i = sub.expect(i, "gatewayd/gw1/door/state", "OFF")
	sub.expect(i, "gatewayd/gw1/door/count", "1")
	pin.EdgesChan <- gpio.High
	i = sub.expect(i, "gatewayd/gw1/door/state", "ON")
	sub.expect(i, "gatewayd/gw1/door/count", "2")
	if got := pin.P; got != gpio.PullUp {
		t.Errorf("pull = %v, want up", got)
	}

	late := subscribe(t, b, "gatewayd/gw1/door/state")
	if m, _ := late.next(0, "gatewayd/gw1/door/state"); m.Payload != "ON" || !m.Retain {
		t.Errorf("retained state = %+v, want retained ON", m)
	}
}

func TestGPIOInDebounceAbsorbsBouncesAndPublishesTheSettledLevel(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	pin := &gpiotest.Pin{N: "GPIO5", Num: 5, EdgesChan: make(chan gpio.Level, 16)}
	sub := subscribe(t, b, "gatewayd/gw1/button/#")
	startRunner(t, b, oneDevice(DeviceConfig{Name: "button", Driver: "gpio-in", Pin: "GPIO5", Pull: "down", Debounce: 300 * time.Millisecond}), gpioHW(pin))
	i := sub.expect(0, "gatewayd/gw1/button/state", "OFF")
	// a press that bounces: high, low, high, low, high within the window
	for _, l := range []gpio.Level{gpio.High, gpio.Low, gpio.High, gpio.Low, gpio.High} {
		pin.EdgesChan <- l
	}
	i = sub.expect(i, "gatewayd/gw1/button/state", "ON")
	// a release that bounces and settles low
	for _, l := range []gpio.Level{gpio.Low, gpio.High, gpio.Low} {
		pin.EdgesChan <- l
	}
	i = sub.expect(i, "gatewayd/gw1/button/state", "OFF")
	sub.expect(i, "gatewayd/gw1/button/count", "2")
	want := []string{"OFF", "ON", "OFF"}
	if got := sub.payloads("gatewayd/gw1/button/state"); !equal(got, want) {
		t.Errorf("states = %q, want %q (one per settled level)", got, want)
	}
	if got := sub.payloads("gatewayd/gw1/button/count"); !equal(got, []string{"0", "1", "2"}) {
		t.Errorf("counts = %q, want 0 1 2", got)
	}
}

func TestGPIOInInvertedAndRisingEdgeCount(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	pin := &gpiotest.Pin{N: "GPIO6", Num: 6, EdgesChan: make(chan gpio.Level)}
	sub := subscribe(t, b, "gatewayd/gw1/pir/#")
	startRunner(t, b, oneDevice(DeviceConfig{Name: "pir", Driver: "gpio-in", Pin: "GPIO6", Pull: "up", Edge: "rising", Inverted: true}), gpioHW(pin))
	i := sub.expect(0, "gatewayd/gw1/pir/state", "OFF") // high, inverted
	pin.EdgesChan <- gpio.Low
	i = sub.expect(i, "gatewayd/gw1/pir/state", "ON")
	sub.expect(i, "gatewayd/gw1/pir/count", "0") // a falling edge is not counted
	pin.EdgesChan <- gpio.High
	i = sub.expect(i, "gatewayd/gw1/pir/state", "OFF")
	sub.expect(i, "gatewayd/gw1/pir/count", "1")
}

func TestGPIOOutFollowsCommandsFromMQTT(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	pin := &gpiotest.Pin{N: "GPIO27", Num: 27}
	sub := subscribe(t, b, "gatewayd/gw1/relay/#")
	pub := publisher(t, b)
	startRunner(t, b, oneDevice(DeviceConfig{Name: "relay", Driver: "gpio-out", Pin: "GPIO27", Initial: "on"}), gpioHW(pin))
	i := sub.expect(0, "gatewayd/gw1/relay/state", "ON")
	if pin.Read() != gpio.High {
		t.Fatalf("initial ON left the line low")
	}
	sub.expect(0, "gatewayd/gw1/relay/status", "online")
	steps := []struct {
		cmd   string
		state string
		level gpio.Level
	}{
		{"OFF", "OFF", gpio.Low},
		{"1", "ON", gpio.High},
		{"false", "OFF", gpio.Low},
		{"TRUE", "ON", gpio.High},
		{"0", "OFF", gpio.Low},
		{"Toggle", "ON", gpio.High},
		{"toggle", "OFF", gpio.Low},
		{"on", "ON", gpio.High},
	}
	for _, s := range steps {
		pub("gatewayd/gw1/relay/set", s.cmd)
		var m msg
		m, i = sub.next(i+1, "gatewayd/gw1/relay/state")
		if m.Payload != s.state || !m.Retain {
			t.Fatalf("after %q: state %+v, want retained %s", s.cmd, m, s.state)
		}
		if got := pin.Read(); got != s.level {
			t.Fatalf("after %q: line %v, want %v", s.cmd, got, s.level)
		}
	}
	// a command it does not understand changes nothing and publishes nothing
	pub("gatewayd/gw1/relay/set", "maybe")
	pub("gatewayd/gw1/relay/set", "off")
	m, _ := sub.next(i+1, "gatewayd/gw1/relay/state")
	if m.Payload != "OFF" {
		t.Errorf("after a bad command then off: %q, want OFF", m.Payload)
	}
}

func TestGPIOOutSafeStateOnShutdown(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	pin := &gpiotest.Pin{N: "GPIO22", Num: 22}
	sub := subscribe(t, b, "gatewayd/gw1/heater/#")
	pub := publisher(t, b)
	_, stop := startRunner(t, b, oneDevice(DeviceConfig{Name: "heater", Driver: "gpio-out", Pin: "GPIO22", SafeState: "OFF"}), gpioHW(pin))
	i := sub.expect(0, "gatewayd/gw1/heater/state", "OFF")
	sub.expect(0, "gatewayd/gw1/heater/status", "online")
	pub("gatewayd/gw1/heater/set", "ON")
	i = sub.expect(i, "gatewayd/gw1/heater/state", "ON")
	if pin.Read() != gpio.High {
		t.Fatal("ON left the line low")
	}
	stop()
	if pin.Read() != gpio.Low {
		t.Errorf("after shutdown the line is %v, want the safe state (low)", pin.Read())
	}
	i = sub.expect(i, "gatewayd/gw1/heater/state", "OFF")
	sub.expect(i, "gatewayd/gw1/heater/status", "offline")
}

func TestGPIOOutSafeStateAfterBrokerLoss(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	pin := &gpiotest.Pin{N: "GPIO23", Num: 23}
	sub := subscribe(t, b, "gatewayd/gw1/pump/#")
	pub := publisher(t, b)
	startRunner(t, b, oneDevice(DeviceConfig{Name: "pump", Driver: "gpio-out", Pin: "GPIO23", Inverted: true, SafeState: "off", SafeAfter: 200 * time.Millisecond}), gpioHW(pin))
	i := sub.expect(0, "gatewayd/gw1/pump/state", "OFF")
	sub.expect(0, "gatewayd/gw1/pump/status", "online")
	if pin.Read() != gpio.High {
		t.Fatal("inverted OFF must drive the line high")
	}
	pub("gatewayd/gw1/pump/set", "on")
	sub.expect(i, "gatewayd/gw1/pump/state", "ON")
	if pin.Read() != gpio.Low {
		t.Fatal("inverted ON must drive the line low")
	}
	// The broker becomes unreachable for the pump's client only.
	b.setRefuse(true)
	b.mu.Lock()
	conns := b.conns
	b.mu.Unlock()
	for _, c := range conns[2:] { // after the subscriber's and the commander's
		c.Close()
	}
	deadline := time.Now().Add(waitLimit)
	for pin.Read() != gpio.High {
		if time.Now().After(deadline) {
			t.Fatal("the output never went to its safe state with the broker gone")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.setRefuse(false)
}

func TestParseSwitchCommands(t *testing.T) {
	for _, c := range []struct {
		in      string
		cur     bool
		want    bool
		wantErr bool
	}{
		{"ON", false, true, false}, {"on", false, true, false}, {" On ", false, true, false},
		{"OFF", true, false, false}, {"1", false, true, false}, {"0", true, false, false},
		{"true", false, true, false}, {"FALSE", true, false, false},
		{"toggle", false, true, false}, {"TOGGLE", true, false, false},
		{"", false, false, true}, {"2", false, false, true}, {"yes", false, false, true},
	} {
		got, err := parseSwitch(c.in, c.cur)
		if (err != nil) != c.wantErr || (err == nil && got != c.want) {
			t.Errorf("parseSwitch(%q, %v) = %v, %v", c.in, c.cur, got, err)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestGPIOOutSafeStateWhenTheBrokerNeverComes(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	b.setRefuse(true)
	pin := &gpiotest.Pin{N: "GPIO24", Num: 24}
	_, stop := startRunner(t, b, oneDevice(DeviceConfig{Name: "fan", Driver: "gpio-out", Pin: "GPIO24", Initial: "ON", SafeState: "OFF", SafeAfter: 300 * time.Millisecond}), gpioHW(pin))
	waitLevel := func(l gpio.Level, what string) {
		t.Helper()
		deadline := time.Now().Add(waitLimit)
		for pin.Read() != l {
			if time.Now().After(deadline) {
				t.Fatal(what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitLevel(gpio.High, "the output never took its initial state")
	waitLevel(gpio.Low, "the output never went to its safe state")
	stop() // returns though the broker was never reached
}
