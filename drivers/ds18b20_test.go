package drivers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// w1 files as the kernel's w1_therm driver writes them.
const (
	w1Good     = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
	w1Negative = "5e ff 4b 46 7f ff 02 10 5f : crc=5f YES\n5e ff 4b 46 7f ff 02 10 5f t=-10125\n"
	w1CRCNo    = "72 01 4b 46 7f ff 0e 10 57 : crc=a3 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"
	w1PowerOn  = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"
	w1Zero     = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"
)

// writeTree creates files under dir from path -> content.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readingsByChannel(t *testing.T, rds []Reading) map[string]Reading {
	t.Helper()
	got := map[string]Reading{}
	for _, rd := range rds {
		if _, dup := got[rd.Channel]; dup {
			t.Errorf("channel %s twice in one read", rd.Channel)
		}
		got[rd.Channel] = rd
	}
	return got
}

// fakeW1 builds a /sys/bus/w1/devices tree: one directory per sensor id
// holding its w1_slave, plus the bus master the kernel lists beside them.
func fakeW1(t *testing.T, sensors map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"w1_bus_master1/w1_master_slave_count": "4\n"}
	for id, content := range sensors {
		files[id+"/w1_slave"] = content
	}
	writeTree(t, dir, files)
	return dir
}

func TestDS18B20NamedSensors(t *testing.T) {
	noLeaks(t)
	dir := fakeW1(t, map[string]string{
		"28-000005e2fdc3": w1Good,
		"28-00000a1b2c3d": w1Negative,
		"28-0316a2795aff": w1CRCNo,
		"28-000000000001": w1PowerOn,
		"28-0000000000ff": w1Zero,
	})
	hw := &ptyHardware{t: t, w1: dir}
	dev := openTestDevice(t, DeviceConfig{Name: "temps", Driver: "ds18b20", Sensors: []string{
		"28-000005e2fdc3=kitchen",
		"28-00000A1B2C3D=freezer", // the kernel writes ids in lower case
		"28-0316a2795aff=garage",
		"28-000000000001=attic",
		"28-0000000000ff=cellar",
	}}, hw)
	var chs []string
	for _, in := range dev.Channels() {
		chs = append(chs, in.Channel)
		if in.Channel == "kitchen" && (in.DeviceClass != "temperature" || in.Unit != "°C" || in.StateClass != "measurement") {
			t.Errorf("kitchen announced as %+v", in)
		}
	}
	if got := strings.Join(chs, " "); got != "kitchen freezer garage attic cellar read_errors" {
		t.Errorf("channels %q", got)
	}
	rds, err := dev.(Sensor).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := readingsByChannel(t, rds)
	wantValue(t, got, "kitchen", 23.125)
	wantValue(t, got, "freezer", -10.125)
	wantValue(t, got, "read_errors", 3)
	for _, ch := range []string{"garage", "attic", "cellar"} {
		if rd, ok := got[ch]; ok {
			t.Errorf("%s published despite its error: %+v", ch, rd)
		}
	}

	// A sensor that recovers is published again; the count stays.
	writeTree(t, dir, map[string]string{"28-000000000001/w1_slave": w1Good})
	rds, err = dev.(Sensor).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got = readingsByChannel(t, rds)
	wantValue(t, got, "attic", 23.125)
	wantValue(t, got, "read_errors", 5)
	if n := dev.(*ds18b20Device).ReadErrors(); n != 5 {
		t.Errorf("ReadErrors = %d, want 5", n)
	}
}

func TestDS18B20DiscoversEverySensor(t *testing.T) {
	dir := fakeW1(t, map[string]string{
		"28-000005e2fdc3": w1Good,
		"10-000801b5a8f1": w1Negative, // a DS18S20
		"3a-00000012ab34": w1Good,     // a DS2413 switch: not a thermometer
	})
	hw := &ptyHardware{t: t, w1: dir}
	dev := openTestDevice(t, DeviceConfig{Name: "temps", Driver: "ds18b20"}, hw)
	var chs []string
	for _, in := range dev.Channels() {
		chs = append(chs, in.Channel)
	}
	if got := strings.Join(chs, " "); got != "10-000801b5a8f1 28-000005e2fdc3 read_errors" {
		t.Errorf("channels %q", got)
	}
	// A sensor wired later is read too.
	writeTree(t, dir, map[string]string{"28-00000a1b2c3d/w1_slave": w1Negative})
	rds, err := dev.(Sensor).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := readingsByChannel(t, rds)
	wantValue(t, got, "28-000005e2fdc3", 23.125)
	wantValue(t, got, "10-000801b5a8f1", -10.125)
	wantValue(t, got, "28-00000a1b2c3d", -10.125)
	wantValue(t, got, "read_errors", 0)
	chs = nil
	for _, in := range dev.Channels() {
		chs = append(chs, in.Channel)
	}
	if got := strings.Join(chs, " "); got != "10-000801b5a8f1 28-000005e2fdc3 28-00000a1b2c3d read_errors" {
		t.Errorf("channels after a sensor was wired: %q", got)
	}
}

func TestDS18B20Errors(t *testing.T) {
	t.Run("no sensor on the bus fails Open", func(t *testing.T) {
		hw := &ptyHardware{t: t, w1: fakeW1(t, nil)}
		if _, err := Open(DeviceConfig{Name: "t", Driver: "ds18b20"}, Env{Hardware: hw}); err == nil {
			t.Error("Open with no sensor: no error")
		}
	})
	t.Run("no w1 directory fails Open", func(t *testing.T) {
		hw := &ptyHardware{t: t, w1: filepath.Join(t.TempDir(), "missing")}
		if _, err := Open(DeviceConfig{Name: "t", Driver: "ds18b20"}, Env{Hardware: hw}); err == nil || !strings.Contains(err.Error(), "w1-gpio") {
			t.Errorf("Open = %v, want an error naming w1-gpio", err)
		}
	})
	t.Run("every sensor failing fails Read", func(t *testing.T) {
		hw := &ptyHardware{t: t, w1: fakeW1(t, map[string]string{"28-000005e2fdc3": w1PowerOn})}
		dev := openTestDevice(t, DeviceConfig{Name: "t", Driver: "ds18b20", Sensors: []string{"28-000005e2fdc3", "28-000005e2fdc4"}}, hw)
		_, err := dev.(Sensor).Read(context.Background())
		if !errors.Is(err, errW1PowerOn) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Read = %v, want the power-on error and the missing sensor", err)
		}
	})
	t.Run("configuration", func(t *testing.T) {
		for _, tt := range []struct {
			sensors []string
			want    string
		}{
			{[]string{"kitchen"}, "not a 1-Wire temperature sensor id"},
			{[]string{"3a-00000012ab34"}, "not a 1-Wire temperature sensor id"},
			{[]string{"28-000005e2fdc3=a/b"}, "topic level"},
			{[]string{"28-000005e2fdc3=a", "28-000005e2fdc4=a"}, "twice"},
		} {
			cfg := DeviceConfig{Name: "t", Driver: "ds18b20", Sensors: tt.sensors}
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("sensors %q: Validate = %v, want %q", tt.sensors, err, tt.want)
			}
		}
	})
}

func TestParseW1Slave(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want float64
		err  error
	}{
		{"good", w1Good, 23.125, nil},
		{"negative", w1Negative, -10.125, nil},
		{"CRC NO", w1CRCNo, 0, errW1CRC},
		{"85000", w1PowerOn, 0, errW1PowerOn},
		{"all zero", w1Zero, 0, errW1Zero},
		{"no newline at end", strings.TrimSuffix(w1Good, "\n"), 23.125, nil},
		{"one line", "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n", 0, nil},
		{"empty", "", 0, nil},
		{"no t=", "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57\n", 0, nil},
		{"out of range", "ff 07 4b 46 7f ff 01 10 00 : crc=00 YES\nff 07 4b 46 7f ff 01 10 00 t=127937\n", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseW1Slave(tt.in)
			wantErr := tt.err != nil || tt.want == 0
			switch {
			case wantErr && err == nil:
				t.Errorf("parseW1Slave = %v, want an error", got)
			case tt.err != nil && !errors.Is(err, tt.err):
				t.Errorf("parseW1Slave error %v, want %v", err, tt.err)
			case !wantErr && (err != nil || !approx(got, tt.want)):
				t.Errorf("parseW1Slave = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// Through the Runner and the broker: values on <topic>/<channel> and a Home
// Assistant sensor announced with the driver's defaults, no settings.
func TestDS18B20PublishesAndAnnounces(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	sub := subscribe(t, b, "gatewayd/#", "homeassistant/#")
	dir := fakeW1(t, map[string]string{
		"28-000005e2fdc3": "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23500\n",
	})
	cfg := DefaultConfig()
	cfg.HomeAssistant.Enabled = true
	cfg.Devices = []DeviceConfig{{Name: "temps", Driver: "ds18b20", Interval: time.Hour, Sensors: []string{"28-000005e2fdc3=kitchen"}}}
	startRunner(t, b, cfg, &ptyHardware{t: t, w1: dir})

	sub.expect(0, "gatewayd/gw1/temps/kitchen", "23.50")
	m, _ := sub.next(0, "homeassistant/sensor/gw1/temps_kitchen/config")
	c := decodeHA(t, m)
	check(t, "device_class", c.DeviceClass, "temperature")
	check(t, "unit_of_measurement", c.UnitOfMeasurement, "°C")
	check(t, "state_class", c.StateClass, "measurement")
	check(t, "state_topic", c.StateTopic, "gatewayd/gw1/temps/kitchen")
}

// Without configured sensors, one wired after start is published with the
// precision of the others and announced to Home Assistant.
func TestDS18B20SensorWiredLaterIsAnnounced(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	sub := subscribe(t, b, "gatewayd/#", "homeassistant/#")
	dir := fakeW1(t, map[string]string{"28-000005e2fdc3": w1Good})
	cfg := DefaultConfig()
	cfg.HomeAssistant.Enabled = true
	cfg.Devices = []DeviceConfig{{Name: "temps", Driver: "ds18b20", Interval: 200 * time.Millisecond}}
	startRunner(t, b, cfg, &ptyHardware{t: t, w1: dir})
	sub.expect(0, "gatewayd/gw1/temps/28-000005e2fdc3", "23.12")
	sub.next(0, "homeassistant/sensor/gw1/temps_28-000005e2fdc3/config")

	writeTree(t, dir, map[string]string{"28-00000a1b2c3d/w1_slave": w1Negative})
	m, _ := sub.next(0, "gatewayd/gw1/temps/28-00000a1b2c3d")
	check(t, "late sensor's value", m.Payload, "-10.12")
	m, _ = sub.next(0, "homeassistant/sensor/gw1/temps_28-00000a1b2c3d/config")
	c := decodeHA(t, m)
	check(t, "device_class", c.DeviceClass, "temperature")
	check(t, "state_topic", c.StateTopic, "gatewayd/gw1/temps/28-00000a1b2c3d")
	if c.SuggestedDisplayPrecision == nil || *c.SuggestedDisplayPrecision != 2 {
		t.Errorf("suggested_display_precision = %v, want 2", c.SuggestedDisplayPrecision)
	}
}
