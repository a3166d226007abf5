package drivers

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"gatewayd/config"
)

// Config is the `devices` section of the configuration file: how readings are
// published, and the list of devices.
type Config struct {
	// TopicPrefix is the first level of every device's default topic
	// (<topic_prefix>/<gateway_id>/<name>). Empty: "gatewayd".
	TopicPrefix string `yaml:"topic_prefix"`
	// Payload is "plain" (the number formatted with the channel's precision,
	// or the text) or "json" ({"value":21.4,"unit":"°C","ts":<unix ms>}).
	// Empty: plain.
	Payload string `yaml:"payload"`
	// HomeAssistant configures MQTT discovery.
	HomeAssistant HomeAssistantConfig `yaml:"homeassistant"`
	// BrokerURL is the broker the devices publish to (mqtt://host:port, ...).
	// Empty: the gateway's embedded broker, in process.
	BrokerURL string `yaml:"broker_url"`
	// Devices is the list of devices; names are unique.
	Devices []DeviceConfig `yaml:"devices"`
}

// HomeAssistantConfig configures Home Assistant MQTT discovery.
type HomeAssistantConfig struct {
	// Enabled announces every channel and output under Prefix.
	Enabled bool `yaml:"enabled"`
	// Prefix is the discovery prefix. Empty: "homeassistant".
	Prefix string `yaml:"prefix"`
}

// Payload formats.
const (
	PayloadPlain = "plain"
	PayloadJSON  = "json"
)

// DefaultConfig returns the section's defaults: no devices, plain payloads,
// topic prefix "gatewayd", discovery off under "homeassistant".
func DefaultConfig() Config {
	return Config{
		TopicPrefix:   "gatewayd",
		Payload:       PayloadPlain,
		HomeAssistant: HomeAssistantConfig{Prefix: "homeassistant"},
	}
}

// DefaultInterval is a polled sensor's interval when none is configured.
const DefaultInterval = 30 * time.Second

// DeviceConfig is one entry of the devices list. Settings that belong to a
// kind of bus or pin are flat keys of this one struct, so that strict YAML
// decoding rejects a misspelt key whatever the driver; each driver reads the
// keys it needs and its check (RegisterCheck) refuses what it cannot use.
type DeviceConfig struct {
	// Name identifies the device: client id, topic, discovery ids. Letters,
	// digits, '_' and '-'.
	Name string `yaml:"name"`
	// Driver is a registered driver name (bme280, gpio-in, ...).
	Driver string `yaml:"driver"`
	// Interval is how often a Sensor is read. Zero: DefaultInterval.
	Interval time.Duration `yaml:"interval"`
	// Topic is the device's base topic. Empty: <topic_prefix>/<gateway_id>/<name>.
	Topic string `yaml:"topic"`
	// Channels holds per-channel settings, keyed by the driver's channel name
	// (temperature, humidity, a0, state, ...).
	Channels map[string]ChannelConfig `yaml:"channels"`
	// HomeAssistant holds the device's discovery metadata.
	HomeAssistant DeviceHomeAssistant `yaml:"homeassistant"`

	// I2C devices.
	Bus     string `yaml:"bus"`     // I2C bus number ("1") or adapter name; empty: the board's default
	Address uint16 `yaml:"address"` // 7-bit address; zero: the driver's default

	// GPIO.
	Pin       string        `yaml:"pin"`        // GPIO17, P1-11, gpiochip0:17
	Pull      string        `yaml:"pull"`       // up, down, none (default none)
	Edge      string        `yaml:"edge"`       // both (default), rising, falling
	Debounce  time.Duration `yaml:"debounce"`   // input: edges closer than this are one
	Inverted  bool          `yaml:"inverted"`   // input: low means ON
	Initial   string        `yaml:"initial"`    // output: ON or OFF at start (default OFF)
	SafeState string        `yaml:"safe_state"` // output: ON or OFF on shutdown and broker loss; empty: none
	SafeAfter time.Duration `yaml:"safe_after"` // output: broker loss this long applies SafeState; zero: 30 s

	// Serial.
	Port string `yaml:"port"` // /dev/ttyUSB0, serial0
	Baud int    `yaml:"baud"`

	// 1-Wire.
	Sensors []string `yaml:"sensors"` // ds18b20 ids (28-0316a2795aff); empty: every one found

	// Driver specific.
	Gain       float64  `yaml:"gain"`        // ads1115: full-scale range in volts (6.144, 4.096, 2.048, 1.024, 0.512, 0.256)
	Shunt      float64  `yaml:"shunt"`       // ina219: shunt resistance in ohms (default 0.1)
	MaxCurrent float64  `yaml:"max_current"` // ina219: amperes (default 3.2)
	Inputs     []string `yaml:"inputs"`      // ads1115: a0..a3, a0-a1, a0-a3, a1-a3, a2-a3 (default a0..a3)

	// Keys of the serial-line, modbus-rtu and system drivers, added by their
	// author (the framework had none for them yet); the drivers' files say
	// what each means.
	Regex      string           `yaml:"regex"`      // serial-line: named groups are channels
	Fields     []string         `yaml:"fields"`     // serial-line: CSV column names, "" skips a column
	Separator  string           `yaml:"separator"`  // serial-line: CSV separator (default ",")
	Parity     string           `yaml:"parity"`     // modbus-rtu: none (default), even, odd
	StopBits   int              `yaml:"stop_bits"`  // modbus-rtu: 1 or 2 (default 2 without parity, 1 with)
	Timeout    time.Duration    `yaml:"timeout"`    // modbus-rtu: per request (default 500ms)
	Slaves     []ModbusSlave    `yaml:"slaves"`     // modbus-rtu: slaves with their registers
	Registers  []ModbusRegister `yaml:"registers"`  // modbus-rtu: registers, each naming its slave
	Mounts     []string         `yaml:"mounts"`     // system: mount points for disk usage (default "/")
	Interfaces []string         `yaml:"interfaces"` // system: network interfaces (default every one but lo)
}

// ChannelConfig adjusts one channel's published value and its discovery
// metadata. The published value is raw*scale + offset.
type ChannelConfig struct {
	Scale       *float64 `yaml:"scale"`     // nil: 1
	Offset      float64  `yaml:"offset"`    // added after scale
	Unit        string   `yaml:"unit"`      // overrides the driver's unit
	Precision   *int     `yaml:"precision"` // decimals; nil: the driver's, else as many as needed
	Name        string   `yaml:"name"`      // Home Assistant entity name
	DeviceClass string   `yaml:"device_class"`
	StateClass  string   `yaml:"state_class"`
	Disabled    bool     `yaml:"disabled"` // not published nor announced
}

// DeviceHomeAssistant is a device's Home Assistant metadata.
type DeviceHomeAssistant struct {
	Name  string `yaml:"name"`  // device name shown; empty: the device name
	Model string `yaml:"model"` // empty: the driver name
	Area  string `yaml:"area"`  // suggested_area
	// Disabled keeps this device out of discovery.
	Disabled bool `yaml:"disabled"`
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// Validate checks the section; keys are relative to it (devices[2].pin) and
// each device's messages name it.
func (c *Config) Validate() error {
	var errs []error
	switch c.Payload {
	case "", PayloadPlain, PayloadJSON:
	default:
		errs = append(errs, config.Errorf("payload", "%q is not plain or json", c.Payload))
	}
	if strings.ContainsAny(c.TopicPrefix, "+#") || strings.HasSuffix(c.TopicPrefix, "/") {
		errs = append(errs, config.Errorf("topic_prefix", "%q: no wildcards and no trailing '/'", c.TopicPrefix))
	}
	if strings.ContainsAny(c.HomeAssistant.Prefix, "+#/") {
		errs = append(errs, config.Errorf("homeassistant.prefix", "%q: one topic level without wildcards", c.HomeAssistant.Prefix))
	}
	if c.BrokerURL != "" && !strings.Contains(c.BrokerURL, "://") {
		errs = append(errs, config.Errorf("broker_url", "%q: want scheme://host:port (mqtt, mqtts, ws, wss)", c.BrokerURL))
	}
	seen := map[string]int{}
	pins := map[string]int{} // a pin opens again for the name it was opened by: one device each
	for i := range c.Devices {
		d := &c.Devices[i]
		key := fmt.Sprintf("devices[%d]", i)
		if j, dup := seen[d.Name]; dup && d.Name != "" {
			errs = append(errs, config.Errorf(key+".name", "device %q: name also used by devices[%d]", d.Name, j))
		}
		seen[d.Name] = i
		if p := strings.ToUpper(strings.TrimSpace(d.Pin)); p != "" {
			if j, dup := pins[p]; dup {
				errs = append(errs, config.Errorf(key+".pin", "device %q: pin %s also used by devices[%d]", d.Name, d.Pin, j))
			} else {
				pins[p] = i
			}
		}
		if err := d.Validate(); err != nil {
			errs = append(errs, config.Prefix(key, err))
		}
	}
	return errors.Join(errs...)
}

// Validate checks one device: the common keys, then the driver's own check.
// Keys are relative to the device; every message names it.
func (d *DeviceConfig) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) {
		errs = append(errs, config.Errorf(key, "device %q: %s", d.Name, fmt.Sprintf(format, args...)))
	}
	if !nameRE.MatchString(d.Name) {
		add("name", "name must be 1-64 letters, digits, '_' or '-', starting with a letter or digit")
	}
	if d.Driver == "" {
		add("driver", "driver is required (one of %s)", strings.Join(Drivers(), ", "))
	} else if _, ok := lookup(d.Driver); !ok {
		add("driver", "unknown driver %q (one of %s)", d.Driver, strings.Join(Drivers(), ", "))
	}
	if d.Interval < 0 {
		add("interval", "interval must not be negative")
	} else if d.Interval > 0 && d.Interval < 100*time.Millisecond {
		add("interval", "interval %v is below 100ms", d.Interval)
	}
	if d.Topic != "" && (strings.ContainsAny(d.Topic, "+#") || strings.HasSuffix(d.Topic, "/")) {
		add("topic", "topic %q: no wildcards and no trailing '/'", d.Topic)
	}
	for name, ch := range d.Channels {
		if strings.ContainsAny(name, "+#/") || name == "" {
			add("channels."+name, "channel name %q must be one topic level", name)
		}
		if ch.Precision != nil && (*ch.Precision < 0 || *ch.Precision > 12) {
			add("channels."+name+".precision", "precision %d is not within 0..12", *ch.Precision)
		}
		if ch.Scale != nil && *ch.Scale == 0 {
			add("channels."+name+".scale", "scale 0 would publish a constant")
		}
	}
	if d.Debounce < 0 {
		add("debounce", "debounce must not be negative")
	}
	if d.SafeAfter < 0 {
		add("safe_after", "safe_after must not be negative")
	}
	if d.Baud < 0 {
		add("baud", "baud must not be negative")
	}
	if e, ok := lookup(d.Driver); ok && e.check != nil {
		if err := e.check(d); err != nil {
			for _, fe := range flatten(err) {
				var f *config.FieldError
				if errors.As(fe, &f) {
					add(f.Key, "%v", f.Err)
				} else {
					add("", "%v", fe)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Channel returns the settings for channel name (the zero value when none).
func (d *DeviceConfig) Channel(name string) ChannelConfig { return d.Channels[name] }

// TopicFor returns the device's base topic under prefix and gatewayID.
func (d *DeviceConfig) TopicFor(prefix, gatewayID string) string {
	if d.Topic != "" {
		return d.Topic
	}
	if prefix == "" {
		prefix = "gatewayd"
	}
	return prefix + "/" + gatewayID + "/" + d.Name
}
