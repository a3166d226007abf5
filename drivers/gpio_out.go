package drivers

import (
	"context"
	"strings"
	"sync"

	"gatewayd/config"

	"periph.io/x/conn/v3/gpio"
)

// gpio-out: a digital output (relay, LED, buzzer). Commands arrive on
// <topic>/set: ON, OFF, 1, 0, true, false or toggle, in any case. The new
// state is published retained to <topic>/state. The output starts in its
// initial state (OFF unless configured) and goes to its safe_state, if one
// is configured, on shutdown and after safe_after without the broker.
// inverted drives the line low for ON (active-low relay boards).

func init() {
	Register("gpio-out", openGPIOOut)
	RegisterCheck("gpio-out", checkGPIOOut)
}

func checkGPIOOut(d *DeviceConfig) error {
	var errs []error
	if d.Pin == "" {
		errs = append(errs, config.Errorf("pin", "pin is required (GPIO17, P1-11 or gpiochip0:17)"))
	}
	if d.Initial != "" {
		if _, err := parseSwitch(d.Initial, false); err != nil {
			errs = append(errs, config.Errorf("initial", "%v", err))
		}
	}
	if d.SafeState != "" {
		if _, err := parseSwitch(d.SafeState, false); err != nil || strings.EqualFold(d.SafeState, "toggle") {
			errs = append(errs, config.Errorf("safe_state", "safe_state %q is not ON or OFF", d.SafeState))
		}
	}
	if d.Pull != "" || d.Edge != "" || d.Debounce != 0 {
		errs = append(errs, config.Errorf("pull", "pull, edge and debounce are for gpio-in"))
	}
	return joinErrs(errs)
}

// parseSwitch reads an on/off command; toggle inverts cur.
func parseSwitch(cmd string, cur bool) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(cmd)) {
	case "on", "1", "true":
		return true, nil
	case "off", "0", "false":
		return false, nil
	case "toggle":
		return !cur, nil
	}
	return false, errorf("command %q is not ON, OFF, 1, 0, true, false or toggle", cmd)
}

type gpioOut struct {
	pin      gpio.PinIO
	name     string
	inverted bool
	mu       sync.Mutex
	on       bool
}

func openGPIOOut(cfg DeviceConfig, env Env) (Device, error) {
	on := false
	if cfg.Initial != "" {
		var err error
		if on, err = parseSwitch(cfg.Initial, false); err != nil {
			return nil, err
		}
	}
	p, err := env.Hardware.Pin(cfg.Pin)
	if err != nil {
		return nil, err
	}
	g := &gpioOut{pin: p, name: cfg.Pin, inverted: cfg.Inverted}
	if err := g.drive(on); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *gpioOut) drive(on bool) error {
	if err := g.pin.Out(gpio.Level(on != g.inverted)); err != nil {
		return errorf("gpio-out %s: %v", g.name, err)
	}
	g.on = on
	return nil
}

func (g *gpioOut) Channels() []ChannelInfo {
	return []ChannelInfo{{Channel: "state", Component: ComponentSwitch}}
}

func (g *gpioOut) StateChannel() string { return "state" }

func (g *gpioOut) Set(_ context.Context, cmd string) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	on, err := parseSwitch(cmd, g.on)
	if err != nil {
		return onOff(g.on), err
	}
	if err := g.drive(on); err != nil {
		return onOff(g.on), err
	}
	return onOff(on), nil
}

func (g *gpioOut) State(context.Context) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return onOff(g.on), nil
}

func (g *gpioOut) Close() error { return nil }
