package drivers

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// procValue reads one "Key: N kB" line of /proc/meminfo, in bytes.
func procMeminfo(t *testing.T, key string) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, rest, ok := strings.Cut(line, ":"); ok && k == key {
			kb, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatalf("/proc/meminfo has no %s", key)
	return 0
}

func procUptime(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// procNetDev returns received bytes per interface, as the test reads them.
func procNetDev(t *testing.T) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(strings.Fields(rest)[0], 64)
		out[strings.TrimSpace(name)] = v
	}
	return out
}

// between checks lo <= channel's value <= hi.
func wantBetween(t *testing.T, got map[string]Reading, ch string, lo, hi float64) {
	t.Helper()
	rd, ok := got[ch]
	if !ok {
		t.Errorf("%s: no reading", ch)
		return
	}
	if rd.Value < lo || rd.Value > hi {
		t.Errorf("%s = %v, want within [%v, %v]", ch, rd.Value, lo, hi)
	}
}

// The built-in configuration's system device: no settings, this machine's
// /proc and /sys.
func TestSystemZeroSettingsOnThisMachine(t *testing.T) {
	noLeaks(t)
	dev := openTestDevice(t, DeviceConfig{Name: "gateway", Driver: "system"}, nil)
	netBefore := procNetDev(t)
	upBefore := procUptime(t)
	total := procMeminfo(t, "MemTotal")
	availBefore := procMeminfo(t, "MemAvailable")
	rds, err := dev.(Sensor).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	upAfter := procUptime(t)
	availAfter := procMeminfo(t, "MemAvailable")
	got := readingsByChannel(t, rds)

	for _, ch := range []string{"load_1", "load_5", "load_15"} {
		wantBetween(t, got, ch, 0, 1000)
	}
	// The driver's MemAvailable was read between the test's two readings;
	// allow 64 MiB of drift beyond them.
	const slack = 64 << 20
	lo, hi := min(availBefore, availAfter)-slack, max(availBefore, availAfter)+slack
	wantBetween(t, got, "memory_available", lo/(1<<20), hi/(1<<20))
	wantBetween(t, got, "memory_used", 100*(total-hi)/total, 100*(total-lo)/total)
	wantBetween(t, got, "uptime", upBefore, upAfter)

	var st syscall.Statfs_t
	if err := syscall.Statfs("/", &st); err != nil {
		t.Fatal(err)
	}
	freeGiB := float64(st.Bavail) * float64(st.Bsize) / (1 << 30)
	wantBetween(t, got, "disk_used_root", 0, 100)
	wantBetween(t, got, "disk_free_root", freeGiB-0.5, freeGiB+0.5)

	for name, rx := range netBefore {
		if name == "lo" {
			if _, ok := got["net_rx_lo"]; ok {
				t.Error("lo published without being asked for")
			}
			continue
		}
		wantBetween(t, got, "net_rx_"+name, rx, rx+1<<30)
		if _, ok := got["net_tx_"+name]; !ok {
			t.Errorf("net_tx_%s: no reading", name)
		}
	}

	zones, _ := filepath.Glob("/sys/class/thermal/thermal_zone*/temp")
	readable := false
	for _, z := range zones {
		if _, err := os.ReadFile(z); err == nil {
			readable = true
		}
	}
	if _, ok := got["cpu_temperature"]; ok != readable {
		t.Errorf("cpu_temperature published: %v; this machine has a readable thermal zone: %v", ok, readable)
	} else if ok {
		wantBetween(t, got, "cpu_temperature", -40, 150)
	}
	_, pi := got["throttled"]
	if _, err := os.Stat("/" + systemThrottledPath); (err == nil) != pi {
		t.Errorf("throttled published: %v, firmware file present: %v", pi, err == nil)
	}

	// Everything published was announced, with its unit.
	infos := map[string]ChannelInfo{}
	for _, in := range dev.Channels() {
		infos[in.Channel] = in
	}
	for ch, rd := range got {
		in, ok := infos[ch]
		if !ok {
			t.Errorf("%s published but not in Channels()", ch)
		} else if in.Unit != rd.Unit {
			t.Errorf("%s: unit %q announced, %q published", ch, in.Unit, rd.Unit)
		}
	}
	t.Logf("%d channels: memory_used %.1f%%, disk_used_root %.1f%%, load_1 %.2f", len(got),
		got["memory_used"].Value, got["disk_used_root"].Value, got["load_1"].Value)
}

func TestSystemConfiguredMountsAndInterfaces(t *testing.T) {
	dir := t.TempDir()
	dev := openTestDevice(t, DeviceConfig{Name: "gw", Driver: "system", Mounts: []string{"/", dir}, Interfaces: []string{"lo"}}, nil)
	before := procNetDev(t)["lo"]
	rds, err := dev.(Sensor).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := readingsByChannel(t, rds)
	wantBetween(t, got, "net_rx_lo", before, before+1<<30)
	wantBetween(t, got, "disk_used_"+mountChannel(dir), 0, 100)
	wantBetween(t, got, "disk_used_root", 0, 100)
	for ch := range got {
		if strings.HasPrefix(ch, "net_") && !strings.HasSuffix(ch, "_lo") {
			t.Errorf("%s published; only lo was asked for", ch)
		}
	}
}

// A Raspberry Pi's tree, as its kernel shows it: the CPU zone is not the
// first one, the firmware reports under-voltage now and throttling.
func TestSystemRaspberryPiTree(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"sys/class/thermal/thermal_zone0/type": "gpu-thermal\n",
		"sys/class/thermal/thermal_zone0/temp": "41000\n",
		"sys/class/thermal/thermal_zone1/type": "cpu-thermal\n",
		"sys/class/thermal/thermal_zone1/temp": "48312\n",
		systemThrottledPath:                    "50005\n",
		"proc/meminfo":                         "MemTotal:        3884096 kB\nMemFree:          100000 kB\nMemAvailable:    2913072 kB\n",
		"proc/uptime":                          "12345.67 40000.00\n",
		"proc/net/dev": "Inter-|   Receive                                                |  Transmit\n" +
			" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n" +
			"    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n" +
			"  eth0: 7654321    5000    0    0    0     0          0         0  1234567    4000    0    0    0     0       0          0\n" +
			" wlan0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n",
		// no proc/loadavg: the others are still read
	})
	hw := &ptyHardware{t: t, root: root}
	dev := openTestDevice(t, DeviceConfig{Name: "pi", Driver: "system"}, hw)
	rds, err := dev.(Sensor).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := readingsByChannel(t, rds)
	wantValue(t, got, "cpu_temperature", 48.312)
	wantValue(t, got, "throttled", 0x50005)
	wantText(t, got, "under_voltage", "ON")
	wantText(t, got, "throttling", "ON")
	wantValue(t, got, "memory_used", 100*float64(3884096-2913072)/3884096)
	wantValue(t, got, "memory_available", 2913072.0/1024)
	wantValue(t, got, "uptime", 12345.67)
	wantValue(t, got, "net_rx_eth0", 7654321)
	wantValue(t, got, "net_tx_eth0", 1234567)
	wantValue(t, got, "net_rx_wlan0", 0)
	for _, ch := range []string{"load_1", "net_rx_lo"} {
		if _, ok := got[ch]; ok {
			t.Errorf("%s published", ch)
		}
	}
	infos := map[string]ChannelInfo{}
	for _, in := range dev.Channels() {
		infos[in.Channel] = in
	}
	if in := infos["under_voltage"]; in.Component != ComponentBinarySensor || in.DeviceClass != "problem" {
		t.Errorf("under_voltage announced as %+v", in)
	}
	if in := infos["cpu_temperature"]; in.DeviceClass != "temperature" || in.Unit != "°C" || in.StateClass != "measurement" {
		t.Errorf("cpu_temperature announced as %+v", in)
	}

	// Nothing readable at all is an error.
	empty := &ptyHardware{t: t, root: t.TempDir()}
	dev = openTestDevice(t, DeviceConfig{Name: "none", Driver: "system", Mounts: []string{"/nonexistent"}}, empty)
	if _, err := dev.(Sensor).Read(context.Background()); err == nil {
		t.Error("Read of an empty tree: no error")
	}
}

func TestSystemMountChannel(t *testing.T) {
	for m, want := range map[string]string{"/": "root", "/var/log": "var_log", "/mnt/usb disk/": "mnt_usb_disk", "/data": "data"} {
		if got := mountChannel(m); got != want {
			t.Errorf("mountChannel(%q) = %q, want %q", m, got, want)
		}
	}
	cfg := DeviceConfig{Name: "s", Driver: "system", Mounts: []string{"data"}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("relative mount: Validate = %v", err)
	}
}

func TestSystemConfigFromYAML(t *testing.T) {
	cfg, err := load(t, `
devices:
  - name: gateway
    driver: system
  - name: gateway2
    driver: system
    interval: 1m
    mounts: [/, /var/lib/gatewayd]
    interfaces: [eth0, wlan0]
`)
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.Devices[1]; len(d.Mounts) != 2 || d.Interfaces[1] != "wlan0" {
		t.Errorf("gateway2 %+v", d)
	}
}

// The built-in configuration's device through the Runner: live values and
// Home Assistant entities with no settings.
func TestSystemThroughRunner(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	sub := subscribe(t, b, "gatewayd/gw1/gateway/#", "homeassistant/#")
	cfg := DefaultConfig()
	cfg.HomeAssistant.Enabled = true
	cfg.Devices = []DeviceConfig{{Name: "gateway", Driver: "system"}}
	startRunner(t, b, cfg, &ptyHardware{t: t, root: "/"})
	m, _ := sub.next(0, "gatewayd/gw1/gateway/memory_used")
	v, err := strconv.ParseFloat(m.Payload, 64)
	if err != nil || v <= 0 || v > 100 {
		t.Errorf("memory_used %q", m.Payload)
	}
	sub.next(0, "gatewayd/gw1/gateway/uptime")
	m, _ = sub.next(0, "homeassistant/sensor/gw1/gateway_memory_used/config")
	c := decodeHA(t, m)
	check(t, "unit_of_measurement", c.UnitOfMeasurement, "%")
	check(t, "state_class", c.StateClass, "measurement")
	m, _ = sub.next(0, "homeassistant/sensor/gw1/gateway_uptime/config")
	check(t, "uptime device_class", decodeHA(t, m).DeviceClass, "duration")
}
