package drivers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"gatewayd/config"
)

// fileConfig is how cmd can place the section: inline at the top level of
// the configuration file, so `devices:` is a top-level key.
type fileConfig struct {
	Drivers Config `yaml:",inline"`
}

func (f *fileConfig) Validate() error { return f.Drivers.Validate() }

func load(t *testing.T, doc string) (Config, error) {
	t.Helper()
	f := fileConfig{Drivers: DefaultConfig()}
	err := config.LoadBytes("gatewayd.yaml", []byte(doc), &f)
	return f.Drivers, err
}

func TestConfigLoadsEveryKey(t *testing.T) {
	cfg, err := load(t, `
topic_prefix: site7
payload: json
broker_url: mqtt://127.0.0.1:1883
homeassistant: {enabled: true, prefix: ha}
devices:
  - name: porch
    driver: bme280
    interval: 1m
    bus: "1"
    address: 0x77
    channels:
      temperature: {scale: 1.0, offset: -0.4, unit: °C, precision: 1, name: Porch temperature, device_class: temperature, state_class: measurement}
    homeassistant: {name: Porch, area: Outside}
  - name: door
    driver: gpio-in
    pin: P1-11
    pull: up
    edge: both
    debounce: 50ms
  - name: relay
    driver: gpio-out
    pin: GPIO27
    initial: "off"
    safe_state: "off"
    safe_after: 1m
    topic: house/relay
  - name: adc
    driver: ads1115
    gain: 2.048
    inputs: [a0, a2-a3]
`)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TopicPrefix != "site7" || cfg.Payload != "json" || !cfg.HomeAssistant.Enabled || cfg.HomeAssistant.Prefix != "ha" || cfg.BrokerURL == "" {
		t.Errorf("section %+v", cfg)
	}
	d := cfg.Devices[0]
	if d.Interval != time.Minute || d.Address != 0x77 || d.Bus != "1" || *d.Channels["temperature"].Precision != 1 ||
		d.Channels["temperature"].Offset != -0.4 || d.HomeAssistant.Area != "Outside" {
		t.Errorf("porch %+v", d)
	}
	if g := cfg.Devices[1]; g.Debounce != 50*time.Millisecond || g.Pull != "up" || g.Pin != "P1-11" {
		t.Errorf("door %+v", g)
	}
	if r := cfg.Devices[2]; r.SafeAfter != time.Minute || r.TopicFor(cfg.TopicPrefix, "gw") != "house/relay" {
		t.Errorf("relay %+v", r)
	}
	if got := cfg.Devices[0].TopicFor(cfg.TopicPrefix, "gw"); got != "site7/gw/porch" {
		t.Errorf("default topic %q", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := load(t, "devices: [{name: t, driver: tmp102}]\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TopicPrefix != "gatewayd" || cfg.Payload != "plain" || cfg.HomeAssistant.Prefix != "homeassistant" || cfg.HomeAssistant.Enabled {
		t.Errorf("defaults %+v", cfg)
	}
	if got := cfg.Devices[0].TopicFor(cfg.TopicPrefix, "gw1"); got != "gatewayd/gw1/t" {
		t.Errorf("topic %q", got)
	}
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	_, err := load(t, "devices:\n  - name: porch\n    driver: bme280\n    adress: 0x76\n")
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "adress") || ce.Problems[0].Line != 4 {
		t.Fatalf("misspelt key: %v", err)
	}
}

// Each problem is reported with its key and line, and the message names
// the device.
func TestConfigValidationErrors(t *testing.T) {
	cases := []struct {
		doc, key, msg string
	}{
		{"payload: xml\n", "payload", `"xml" is not plain or json`},
		{"topic_prefix: a/#\n", "topic_prefix", "wildcards"},
		{"broker_url: localhost\n", "broker_url", "scheme://"},
		{"devices: [{name: porch}]\n", "devices[0].driver", `device "porch": driver is required`},
		{"devices: [{name: porch, driver: bme281}]\n", "devices[0].driver", `device "porch": unknown driver "bme281"`},
		{"devices: [{name: 'a b', driver: tmp102}]\n", "devices[0].name", "letters, digits"},
		{"devices: [{name: x, driver: tmp102}, {name: x, driver: tmp102}]\n", "devices[1].name", "also used by devices[0]"},
		{"devices: [{name: x, driver: tmp102, interval: 10ms}]\n", "devices[0].interval", "below 100ms"},
		{"devices: [{name: x, driver: tmp102, address: 0x50}]\n", "devices[0].address", `device "x": address 0x50 is not one the tmp102 can take (0x48, 0x49, 0x4a, 0x4b)`},
		{"devices: [{name: x, driver: tmp102, pin: GPIO4}]\n", "devices[0].bus", "I2C device"},
		{"devices: [{name: x, driver: tmp102, channels: {temperature: {precision: 20}}}]\n", "devices[0].channels.temperature.precision", "not within 0..12"},
		{"devices: [{name: x, driver: tmp102, channels: {temperature: {scale: 0}}}]\n", "devices[0].channels.temperature.scale", "constant"},
		{"devices: [{name: door, driver: gpio-in}]\n", "devices[0].pin", `device "door": pin is required`},
		{"devices: [{name: door, driver: gpio-in, pin: GPIO4, pull: sideways}]\n", "devices[0].pull", `pull "sideways"`},
		{"devices: [{name: door, driver: gpio-in, pin: GPIO4, edge: up}]\n", "devices[0].edge", `edge "up"`},
		{"devices: [{name: door, driver: gpio-in, pin: GPIO4, safe_state: 'off'}]\n", "devices[0].initial", "for gpio-out"},
		{"devices: [{name: r, driver: gpio-out, pin: GPIO4, initial: half}]\n", "devices[0].initial", `command "half"`},
		{"devices: [{name: r, driver: gpio-out, pin: GPIO4, safe_state: toggle}]\n", "devices[0].safe_state", "not ON or OFF"},
		{"devices: [{name: r, driver: gpio-out, pin: GPIO4, debounce: 1s}]\n", "devices[0].pull", "for gpio-in"},
		{"devices: [{name: door, driver: gpio-in, pin: GPIO4}, {name: r, driver: gpio-out, pin: gpio4}]\n", "devices[1].pin", `device "r": pin gpio4 also used by devices[0]`},
		{"devices: [{name: a, driver: ads1115, gain: 3}]\n", "devices[0].gain", "full-scale range"},
		{"devices: [{name: a, driver: ads1115, inputs: [a0, a4]}]\n", "devices[0].inputs[1]", `input "a4"`},
	}
	for _, c := range cases {
		_, err := load(t, c.doc)
		var ce *config.Error
		if !errors.As(err, &ce) {
			t.Errorf("%q: %v, want a *config.Error", c.doc, err)
			continue
		}
		found := false
		for _, p := range ce.Problems {
			if p.Key == c.key && strings.Contains(p.Err.Error(), c.msg) && p.Line > 0 {
				found = true
			}
		}
		if !found {
			t.Errorf("%q: %v\nwant key %s with %q", c.doc, err, c.key, c.msg)
		}
	}
}

func TestConfigFieldErrorKeysWithoutTheLoader(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Devices = []DeviceConfig{{Name: "ok", Driver: "tmp102"}, {Name: "porch", Driver: "gpio-in"}, {Name: "x", Driver: "gpio-out"}}
	err := cfg.Validate()
	var keys []string
	for _, e := range flatten(err) {
		var fe *config.FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("%v is not a *config.FieldError", e)
		}
		keys = append(keys, fe.Key)
	}
	if strings.Join(keys, " ") != "devices[1].pin devices[2].pin" {
		t.Errorf("keys %v", keys)
	}
	if !strings.Contains(err.Error(), `devices[1].pin: device "porch": pin is required`) {
		t.Errorf("message %q", err)
	}
}
