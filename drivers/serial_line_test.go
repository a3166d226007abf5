package drivers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSerialLineRegexOverPty(t *testing.T) {
	noLeaks(t)
	hw := newPtyHardware(t)
	dev := openTestDevice(t, DeviceConfig{
		Name: "meter", Driver: "serial-line", Port: "/dev/ttyUSB0", Baud: 115200,
		Regex: `^T=(?P<temperature>-?[0-9.]+) H=(?P<humidity>[0-9.]+) S=(?P<status>\w+)$`,
	}, hw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := startSource(t, ctx, dev.(Source))
	m := hw.master()
	writeLines(t, m,
		"garbage from power-up",
		"T=21.5 H=40.25 S=OK",
	)
	// The garbage is counted at once, the values follow.
	wantValue(t, run.until("bad_lines"), "bad_lines", 1)
	got := run.until("status")
	wantValue(t, got, "temperature", 21.5)
	wantValue(t, got, "humidity", 40.25)
	wantText(t, got, "status", "OK")
	if got["temperature"].Unit != "°C" || got["humidity"].Unit != "%" {
		t.Errorf("units: %+v %+v", got["temperature"], got["humidity"])
	}

	writeLines(t, m, "T=-3 H=99 S=WET")
	got = run.until("status")
	wantValue(t, got, "temperature", -3)
	wantText(t, got, "status", "WET")
	cancel()
	if err := run.wait(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if got := hw.opened; len(got) != 1 || got[0] != "/dev/ttyUSB0" {
		t.Errorf("ports opened: %q", got)
	}
}

func TestSerialLineCSVOverPty(t *testing.T) {
	noLeaks(t)
	hw := newPtyHardware(t)
	dev := openTestDevice(t, DeviceConfig{
		Name: "scale", Driver: "serial-line", Port: "serial0",
		Separator: ";", Fields: []string{"", "weight", "", "state"},
	}, hw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := startSource(t, ctx, dev.(Source))
	m := hw.master()
	writeLines(t, m,
		"only;two",           // too few columns: bad
		"17;1.250;kg;STABLE", // the first and third columns are not published
	)
	wantValue(t, run.until("bad_lines"), "bad_lines", 1)
	got := run.until("state")
	wantValue(t, got, "weight", 1.25)
	wantText(t, got, "state", "STABLE")
	if _, ok := got[""]; ok {
		t.Errorf("an unnamed column was published: %v", got)
	}
	if n := dev.(*serialLine).BadLines(); n != 1 {
		t.Errorf("BadLines = %d, want 1", n)
	}
	cancel()
	if err := run.wait(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// A failed measurement (nan) is left out, the line's other values are
// published, and the line counts in bad_lines.
func TestSerialLineFailedMeasurementCounted(t *testing.T) {
	noLeaks(t)
	hw := newPtyHardware(t)
	dev := openTestDevice(t, DeviceConfig{
		Name: "weather", Driver: "serial-line", Port: "serial0", Fields: []string{"temperature", "humidity"},
	}, hw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := startSource(t, ctx, dev.(Source))
	writeLines(t, hw.master(), "nan,55.2")
	got := run.until("humidity")
	wantValue(t, got, "humidity", 55.2)
	if _, ok := got["temperature"]; ok {
		t.Errorf("the failed temperature was published: %v", got)
	}
	if n := dev.(*serialLine).BadLines(); n != 1 {
		t.Errorf("BadLines = %d, want 1", n)
	}
	cancel()
	if err := run.wait(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// A device that goes away (USB adapter unplugged) ends Run with an error;
// the next Run opens the port again.
func TestSerialLineUnplugEndsRun(t *testing.T) {
	noLeaks(t)
	hw := newPtyHardware(t)
	dev := openTestDevice(t, DeviceConfig{Name: "s", Driver: "serial-line", Port: "serial0", Fields: []string{"a"}}, hw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := startSource(t, ctx, dev.(Source))
	m := hw.master()
	writeLines(t, m, "1")
	wantValue(t, run.until("a"), "a", 1)
	m.Close()
	if err := run.wait(); !errors.Is(err, errPortClosed) {
		t.Fatalf("Run after unplug = %v, want %v", err, errPortClosed)
	}
	run = startSource(t, ctx, dev.(Source))
	m = hw.master()
	writeLines(t, m, "2")
	wantValue(t, run.until("a"), "a", 2)
	cancel()
	if err := run.wait(); err != nil {
		t.Errorf("Run after cancel = %v", err)
	}
}

// A device whose port is missing is offline, and stays so while the Runner
// retries; it is announced online once its port opens.
func TestSerialLineMissingPortIsOnlineOnlyOnceItWorks(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	hw := newPtyHardware(t)
	hw.setMissing(true)
	sub := subscribe(t, b, "gatewayd/gw1/weather/#")
	r, _ := startRunner(t, b, oneDevice(DeviceConfig{Name: "weather", Driver: "serial-line", Port: "/dev/ttyUSB0",
		Fields: []string{"temperature"}}), hw)
	sub.expect(0, "gatewayd/gw1/weather/status", Offline)
	deadline := time.Now().Add(waitLimit)
	for r.Stats()[0].Errors < 2 { // a retry failed too
		if time.Now().After(deadline) {
			t.Fatalf("stats = %+v, want 2 failures", r.Stats()[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := sub.payloads("gatewayd/gw1/weather/status"); slices.Contains(got, Online) {
		t.Fatalf("status while the port is missing: %q, want only offline", got)
	}

	// Plugged in: online once the port opens, before any line (a device
	// that sends once an hour is not shown offline meanwhile).
	i := sub.count()
	hw.setMissing(false)
	m := hw.master()
	sub.expect(i, "gatewayd/gw1/weather/status", Online)
	writeLines(t, m, "21.5")
	sub.expect(i, "gatewayd/gw1/weather/temperature", "21.5")
}

func TestSerialLineParser(t *testing.T) {
	now := time.Unix(0, 0)
	tests := []struct {
		name string
		s    serialLineSettings
		line string
		want string // channel=value pairs, text quoted; "" means a bad line
	}{
		{"regex", serialLineSettings{Regex: `co2=(?P<co2>\d+)ppm`}, "co2=415ppm", "co2=415"},
		{"regex no match", serialLineSettings{Regex: `co2=(?P<co2>\d+)ppm`}, "co2=?", ""},
		{"regex optional group empty", serialLineSettings{Regex: `a=(?P<a>\d*) b=(?P<b>\d+)`}, "a= b=2", "b=2"},
		{"csv default separator", serialLineSettings{Fields: []string{"x", "y"}}, " 1.5 , abc ", `x=1.5 y="abc"`},
		{"csv extra columns ignored", serialLineSettings{Fields: []string{"x"}}, "1,2,3", "x=1"},
		{"csv trailing skipped column not required", serialLineSettings{Fields: []string{"x", ""}}, "7", "x=7"},
		{"csv too short", serialLineSettings{Fields: []string{"x", "y"}}, "7", ""},
		{"csv all empty values", serialLineSettings{Fields: []string{"x"}}, "", ""},
		{"csv tab", serialLineSettings{Fields: []string{"t", "rh"}, Separator: "\t"}, "20.1\t55", "t=20.1 rh=55"},
		{"negative and exponent", serialLineSettings{Fields: []string{"a", "b"}}, "-1e3,+2.5", "a=-1000 b=2.5"},
		{"not a number left out", serialLineSettings{Fields: []string{"temperature", "humidity"}}, "nan,55.2", "humidity=55.2"},
		{"infinities left out", serialLineSettings{Fields: []string{"a", "b", "c"}}, "1,inf,-Infinity", "a=1"},
		{"only values that are not numbers", serialLineSettings{Fields: []string{"a", "b"}}, "NaN,+Inf", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newLineParser(tt.s)
			if err != nil {
				t.Fatal(err)
			}
			rds, ok, _ := p.parse(tt.line, now)
			var parts []string
			for _, rd := range rds {
				if rd.IsText {
					parts = append(parts, fmt.Sprintf("%s=%q", rd.Channel, rd.Text))
				} else {
					parts = append(parts, fmt.Sprintf("%s=%v", rd.Channel, rd.Value))
				}
			}
			got := strings.Join(parts, " ")
			if !ok {
				got = ""
			}
			if got != tt.want {
				t.Errorf("parse(%q) = %q, want %q", tt.line, got, tt.want)
			}
		})
	}
}

func TestSerialLineConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  DeviceConfig
		want string
	}{
		{"no port", DeviceConfig{Fields: []string{"a"}}, "port is required"},
		{"neither", DeviceConfig{Port: "serial0"}, "either regex"},
		{"both", DeviceConfig{Port: "serial0", Regex: "(?P<a>.)", Fields: []string{"a"}}, "exclusive"},
		{"bad regex", DeviceConfig{Port: "serial0", Regex: "(?P<a>"}, "regex"},
		{"no named group", DeviceConfig{Port: "serial0", Regex: "(a)"}, "no named group"},
		{"fields all empty", DeviceConfig{Port: "serial0", Fields: []string{"", ""}}, "all empty"},
		{"field twice", DeviceConfig{Port: "serial0", Fields: []string{"a", "a"}}, "twice"},
		{"field with slash", DeviceConfig{Port: "serial0", Fields: []string{"a/b"}}, "topic level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Name, tt.cfg.Driver = "dev", "serial-line"
			err := tt.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestChannelMetaGuesses(t *testing.T) {
	tests := []struct{ name, class, unit, state string }{
		{"temperature", "temperature", "°C", "measurement"},
		{"water_temp", "temperature", "°C", "measurement"},
		{"rh", "humidity", "%", "measurement"},
		{"co2", "carbon_dioxide", "ppm", "measurement"},
		{"pm25", "pm25", "µg/m³", "measurement"},
		{"pm2_5", "pm25", "µg/m³", "measurement"},
		{"outdoor_pm2_5", "pm25", "µg/m³", "measurement"},
		{"pm10", "pm10", "µg/m³", "measurement"},
		{"energy_total", "energy", "kWh", "total_increasing"},
		{"status", "", "", ""},
		{"timestamp", "", "", ""},
	}
	for _, tt := range tests {
		in := channelMeta(tt.name)
		if in.DeviceClass != tt.class || in.Unit != tt.unit || in.StateClass != tt.state {
			t.Errorf("channelMeta(%q) = %+v, want class %q unit %q state %q", tt.name, in, tt.class, tt.unit, tt.state)
		}
	}
}

func TestSerialLineConfigFromYAML(t *testing.T) {
	cfg, err := load(t, `
devices:
  - name: meter
    driver: serial-line
    port: /dev/ttyUSB0
    baud: 115200
    regex: '^T=(?P<temperature>[0-9.]+)$'
  - name: scale
    driver: serial-line
    port: serial0
    separator: ";"
    fields: ["", weight, "", state]
`)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Devices[0]; d.Regex != `^T=(?P<temperature>[0-9.]+)$` || d.Baud != 115200 {
		t.Errorf("meter %+v", d)
	}
	if d := cfg.Devices[1]; d.Separator != ";" || strings.Join(d.Fields, ",") != ",weight,,state" {
		t.Errorf("scale %+v", d)
	}
}
