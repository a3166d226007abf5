package drivers

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
)

// Reading is one value a device produced.
type Reading struct {
	// Channel names the value within the device; it is the last topic level
	// (<topic>/<channel>).
	Channel string
	// Value is the number, before the channel's scale and offset.
	Value float64
	// Text is the value when IsText (a state such as ON, a code); scale,
	// offset and precision do not apply.
	Text   string
	IsText bool
	// Unit is the driver's unit (°C, %, hPa, V); a channel's unit setting
	// overrides it.
	Unit string
	// Retain publishes the value retained: for a state (an input's level, an
	// output's state), not for a measurement.
	Retain bool
	// Time is when the value was measured. Zero: when it was published.
	Time time.Time
}

// Component is the Home Assistant entity kind of a channel.
type Component string

const (
	ComponentSensor       Component = "sensor"
	ComponentBinarySensor Component = "binary_sensor"
	ComponentSwitch       Component = "switch"
)

// ChannelInfo describes a channel a device will publish, so that it can be
// announced before its first value. A channel's configuration overrides
// Unit, DeviceClass, StateClass and Name.
type ChannelInfo struct {
	Channel     string
	Unit        string
	DeviceClass string // Home Assistant device_class (temperature, humidity, pressure, voltage, ...)
	StateClass  string // measurement, total_increasing; empty for states
	Component   Component
	// Precision is the number of decimals published (0 for counts and whole
	// numbers); AnyPrecision publishes as many as needed.
	Precision int
	// Name is the entity name. Empty: the channel name.
	Name string
}

// Device is what a Factory opens. It must also implement Sensor, Source or
// Output (a Source may be an Output too, to report a state changed by hand).
type Device interface {
	// Channels lists what the device publishes.
	Channels() []ChannelInfo
	// Close releases the hardware. An Output has already been put in its safe
	// state by then.
	Close() error
}

// Sensor is a polled device: the Runner calls Read every interval.
type Sensor interface {
	Device
	Read(ctx context.Context) ([]Reading, error)
}

// Source is an event-driven device. Run emits readings as they happen until
// ctx ends (it then returns nil) or the hardware fails (the Runner marks the
// device offline and calls Run again after a backoff). emit must not be
// called after Run returns.
type Source interface {
	Device
	Run(ctx context.Context, emit func(Reading)) error
}

// Output is a device commanded through <topic>/set. Set applies a command
// (ON, OFF, toggle, a number: the driver says) and returns the new state,
// which the Runner publishes retained to <topic>/<StateChannel>.
type Output interface {
	Device
	Set(ctx context.Context, command string) (state string, err error)
	// State returns the current state, published when the device comes up.
	State(ctx context.Context) (string, error)
	// StateChannel is the channel the state is published on ("state").
	StateChannel() string
}

// Hardware hands drivers their buses and pins. Package board implements it
// for the gateway; tests implement it with periph's test doubles.
type Hardware interface {
	// I2C opens an I2C bus by number ("1") or adapter name; "" is the board's
	// default bus.
	I2C(bus string) (i2c.Bus, error)
	// Pin opens a GPIO line by name (GPIO17, P1-11, gpiochip0:17).
	Pin(name string) (gpio.PinIO, error)
	// Serial opens a serial port (a path or a name such as serial0) at baud,
	// 8N1.
	Serial(port string, baud int) (io.ReadWriteCloser, error)
	// OneWireDir is the kernel's 1-Wire devices directory
	// (/sys/bus/w1/devices).
	OneWireDir() string
	// Root is the directory /proc and /sys are found under: "/" on the
	// gateway, a fake tree in tests.
	Root() string
}

// Env is what a Factory gets besides its configuration.
type Env struct {
	Hardware Hardware
	Logger   *slog.Logger // never nil
	// Up, when not nil, is called by a Source once what it listens to is
	// open (its serial port): the device is online from then, before its
	// first value, and not while it cannot open it.
	Up func()
}

// Factory opens a device from its configuration. The returned Device
// implements Sensor, Source or Output. A Factory must not keep ctx-less
// goroutines running: everything it starts ends with Close.
type Factory func(cfg DeviceConfig, env Env) (Device, error)

// Check validates the driver-specific keys of a device's configuration. It
// returns *config.FieldError values keyed relative to the device ("pin",
// "address"); Validate adds the device's name to the message.
type Check func(cfg *DeviceConfig) error

type entry struct {
	factory Factory
	check   Check
}

var (
	regMu    sync.RWMutex
	registry = map[string]entry{}
)

// Register makes a driver available under name. It panics if name is taken
// or f is nil; drivers register from init functions.
func Register(name string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if f == nil {
		panic("drivers: Register " + name + ": nil factory")
	}
	if e, dup := registry[name]; dup && e.factory != nil {
		panic("drivers: Register " + name + ": registered twice")
	}
	e := registry[name]
	e.factory = f
	registry[name] = e
}

// RegisterCheck sets the configuration check of the driver name, called by
// Config.Validate.
func RegisterCheck(name string, c Check) {
	regMu.Lock()
	defer regMu.Unlock()
	e := registry[name]
	e.check = c
	registry[name] = e
}

// Drivers lists the registered driver names, sorted.
func Drivers() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	var out []string
	for n, e := range registry {
		if e.factory != nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func lookup(name string) (entry, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	e, ok := registry[name]
	return e, ok && e.factory != nil
}

// Open opens the device cfg describes with its registered driver.
func Open(cfg DeviceConfig, env Env) (Device, error) {
	e, ok := lookup(cfg.Driver)
	if !ok {
		return nil, &UnknownDriverError{Driver: cfg.Driver}
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	return e.factory(cfg, env)
}

// UnknownDriverError is returned by Open for a driver nobody registered.
type UnknownDriverError struct{ Driver string }

func (e *UnknownDriverError) Error() string { return "drivers: unknown driver " + e.Driver }

// BoardInfo identifies the gateway hardware in Home Assistant's device
// registry.
type BoardInfo struct {
	Model  string
	Serial string
}

// AnyPrecision as a ChannelInfo.Precision publishes as many decimals as the
// value needs.
const AnyPrecision = -1
