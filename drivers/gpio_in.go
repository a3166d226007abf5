package drivers

import (
	"context"
	"strings"
	"time"

	"gatewayd/config"

	"periph.io/x/conn/v3/gpio"
)

// gpio-in: a digital input (button, reed contact, PIR, opto-isolated
// input). It publishes its state, ON or OFF, retained to <topic>/state and
// the number of accepted edges to <topic>/count.
//
// The kernel's GPIO character device has no debounce of its own, so
// debouncing is done here: after an edge, further edges within the debounce
// window are absorbed, then the level is read again and published if it
// differs from the last one published. A level that changed without an edge
// being seen (the edge setting filters one direction, or an event was lost)
// is caught by the same comparison every poll period.

func init() {
	Register("gpio-in", openGPIOIn)
	RegisterCheck("gpio-in", checkGPIOIn)
}

// gpioPoll bounds each wait for an edge, so the input notices its context
// ending and re-reads a level whose edge was filtered out.
const gpioPoll = time.Second

func checkGPIOIn(d *DeviceConfig) error {
	var errs []error
	if d.Pin == "" {
		errs = append(errs, config.Errorf("pin", "pin is required (GPIO17, P1-11 or gpiochip0:17)"))
	}
	if _, err := parsePull(d.Pull); err != nil {
		errs = append(errs, config.Errorf("pull", "%v", err))
	}
	if _, err := parseEdge(d.Edge); err != nil {
		errs = append(errs, config.Errorf("edge", "%v", err))
	}
	if d.Initial != "" || d.SafeState != "" {
		errs = append(errs, config.Errorf("initial", "initial and safe_state are for gpio-out"))
	}
	return joinErrs(errs)
}

func parsePull(s string) (gpio.Pull, error) {
	switch strings.ToLower(s) {
	case "", "none", "float":
		return gpio.Float, nil
	case "up":
		return gpio.PullUp, nil
	case "down":
		return gpio.PullDown, nil
	}
	return gpio.PullNoChange, errorf("pull %q is not up, down or none", s)
}

func parseEdge(s string) (gpio.Edge, error) {
	switch strings.ToLower(s) {
	case "", "both":
		return gpio.BothEdges, nil
	case "rising":
		return gpio.RisingEdge, nil
	case "falling":
		return gpio.FallingEdge, nil
	}
	return gpio.NoEdge, errorf("edge %q is not both, rising or falling", s)
}

type gpioIn struct {
	pin      gpio.PinIO
	edge     gpio.Edge
	debounce time.Duration
	inverted bool
	count    uint64
}

func openGPIOIn(cfg DeviceConfig, env Env) (Device, error) {
	pull, err := parsePull(cfg.Pull)
	if err != nil {
		return nil, err
	}
	edge, err := parseEdge(cfg.Edge)
	if err != nil {
		return nil, err
	}
	p, err := env.Hardware.Pin(cfg.Pin)
	if err != nil {
		return nil, err
	}
	if err := p.In(pull, edge); err != nil {
		return nil, errorf("gpio-in %s: %v", cfg.Pin, err)
	}
	return &gpioIn{pin: p, edge: edge, debounce: cfg.Debounce, inverted: cfg.Inverted}, nil
}

func (g *gpioIn) Channels() []ChannelInfo {
	return []ChannelInfo{
		{Channel: "state", Component: ComponentBinarySensor},
		{Channel: "count", StateClass: "total_increasing", Precision: 0},
	}
}

func (g *gpioIn) on(l gpio.Level) bool { return bool(l) != g.inverted }

func onOff(on bool) string {
	if on {
		return "ON"
	}
	return "OFF"
}

// Run publishes the current state, then every change.
func (g *gpioIn) Run(ctx context.Context, emit func(Reading)) error {
	last := g.pin.Read()
	emit(Reading{Channel: "state", Text: onOff(g.on(last)), IsText: true, Retain: true})
	emit(Reading{Channel: "count", Value: float64(g.count), Retain: true})
	for ctx.Err() == nil {
		edge := g.pin.WaitForEdge(gpioPoll)
		if ctx.Err() != nil {
			break
		}
		if edge && g.debounce > 0 {
			// Absorb the bounces: wait until the line has been quiet for
			// the whole window.
			for g.pin.WaitForEdge(g.debounce) {
				if ctx.Err() != nil {
					return nil
				}
			}
		}
		now := time.Now()
		l := g.pin.Read()
		if l == last {
			continue
		}
		last = l
		if g.edge == gpio.BothEdges || (g.edge == gpio.RisingEdge) == bool(l) {
			g.count++
		}
		emit(Reading{Channel: "state", Text: onOff(g.on(l)), IsText: true, Retain: true, Time: now})
		emit(Reading{Channel: "count", Value: float64(g.count), Retain: true, Time: now})
	}
	return nil
}

func (g *gpioIn) Close() error { return g.pin.Halt() }
