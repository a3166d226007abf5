//go:build linux

// Command checker runs inside the board test's virtual machine (see
// scripts/board-test): it sets up the simulated hardware (a gpio-sim bank,
// BME280 registers on i2c-stub), starts the real gatewayd on a configuration
// that uses them, and checks what gatewayd publishes over MQTT against what
// the hardware was made to do. It prints one line, "BOARD-TEST: PASS" or
// "BOARD-TEST: FAIL <why>", and exits 0 or 1.
//
// Settings come from the kernel command line (gwcheck.serial=/dev/ttyS1,
// gwcheck.edge=falling to break the gpio-in configuration on purpose).
package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"gatewayd/broker/client"
)

const (
	gatewayID = "vm"
	prefix    = "gw/" + gatewayID
	stubName  = "SMBus stub driver"
	bmeAddr   = 0x76
	// Each wait for a message; generous for software emulation. Never a
	// measured duration: only "did it arrive at all".
	patience = 60 * time.Second
)

func main() {
	err := run()
	if err != nil {
		fmt.Printf("BOARD-TEST: FAIL %v\n", err)
		os.Exit(1)
	}
	fmt.Println("BOARD-TEST: PASS")
}

func logf(format string, args ...any) {
	fmt.Printf("checker: "+format+"\n", args...)
}

func cmdline() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	m := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "gwcheck.") {
			m[strings.TrimPrefix(k, "gwcheck.")] = v
		}
	}
	return m
}

func run() error {
	args := cmdline()
	serialPort := args["serial"]
	edge := args["edge"]
	if edge == "" {
		edge = "both"
	}

	sim, err := setupGPIOSim()
	if err != nil {
		return fmt.Errorf("gpio-sim: %w", err)
	}
	bus, err := setupBME280()
	if err != nil {
		return fmt.Errorf("i2c-stub: %w", err)
	}
	logf("gpio-sim lines in %s, i2c-stub on i2c-%d, serial %s, gpio-in edge %s", sim, bus, serialPort, edge)

	cfg := fmt.Sprintf(`gateway_id: %s
data_dir: /tmp/gatewayd
log: {level: info}
broker:
  listeners:
    - {name: local, address: 127.0.0.1:1883}
topic_prefix: gw
devices:
  - {name: door, driver: gpio-in, pin: GPIO17, pull: down, edge: %s, debounce: 1s}
  - {name: relay, driver: gpio-out, pin: GPIO27, initial: "off"}
  - {name: climate, driver: bme280, bus: %q, address: 0x76, interval: 1s}
  - {name: gps, driver: nmea, port: %s, baud: 9600}
`, gatewayID, edge, stubName, serialPort)
	if err := os.WriteFile("/tmp/gatewayd.yaml", []byte(cfg), 0o644); err != nil {
		return err
	}
	gw := exec.Command("/bin/gatewayd", "--config", "/tmp/gatewayd.yaml")
	gw.Stdout, gw.Stderr = os.Stdout, os.Stdout
	if err := gw.Start(); err != nil {
		return fmt.Errorf("start gatewayd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- gw.Wait() }()
	defer func() {
		gw.Process.Signal(unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			gw.Process.Kill()
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := newMailbox()
	c, err := connect(ctx, exited)
	if err != nil {
		return err
	}
	defer c.Disconnect(context.Background())
	if _, err := c.Subscribe(ctx, m.put, client.Subscription{Filter: prefix + "/#", QoS: 1}); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}

	checks := []struct {
		name string
		f    func() error
	}{
		{"gpio-in", func() error { return checkInput(m, sim) }},
		{"gpio-out", func() error { return checkOutput(ctx, c, m, sim) }},
		{"bme280", func() error { return checkBME280(m) }},
		{"nmea", func() error { return checkNMEA(m) }},
	}
	var failed []string
	for _, ck := range checks {
		if err := ck.f(); err != nil {
			logf("FAIL %s: %v", ck.name, err)
			failed = append(failed, ck.name+": "+err.Error())
			continue
		}
		logf("ok   %s", ck.name)
	}
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func connect(ctx context.Context, exited <-chan error) (*client.Client, error) {
	deadline := time.Now().Add(patience)
	for {
		c, err := client.New(client.Options{URL: "mqtt://127.0.0.1:1883", ClientID: "board-checker", CleanStart: true})
		if err != nil {
			return nil, err
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = c.Connect(cctx)
		cancel()
		if err == nil {
			return c, nil
		}
		select {
		case e := <-exited:
			return nil, fmt.Errorf("gatewayd exited: %v", e)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to gatewayd: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mailbox keeps every message per topic, in order of arrival.
type mailbox struct {
	mu     sync.Mutex
	byTop  map[string][]string
	notify chan struct{}
}

func newMailbox() *mailbox {
	return &mailbox{byTop: map[string][]string{}, notify: make(chan struct{}, 1)}
}

func (m *mailbox) put(msg *client.Message) {
	m.mu.Lock()
	m.byTop[msg.Topic] = append(m.byTop[msg.Topic], string(msg.Payload))
	m.mu.Unlock()
	select {
	case m.notify <- struct{}{}:
	default:
	}
}

// wait returns the payloads of topic from index from on, once cond holds
// for them.
func (m *mailbox) wait(topic string, from int, cond func([]string) bool) ([]string, error) {
	deadline := time.After(patience)
	for {
		m.mu.Lock()
		var got []string
		if all := m.byTop[topic]; len(all) > from {
			got = append(got, all[from:]...)
		}
		m.mu.Unlock()
		if cond(got) {
			return got, nil
		}
		select {
		case <-m.notify:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			return got, fmt.Errorf("%s: got %q", topic, got)
		}
	}
}

func (m *mailbox) count(topic string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byTop[topic])
}

// last waits for a message on topic (after the first from) and returns it.
func (m *mailbox) next(topic string, from int) (string, error) {
	got, err := m.wait(topic, from, func(s []string) bool { return len(s) > 0 })
	if err != nil {
		return "", err
	}
	return got[0], nil
}

// ---- GPIO through gpio-sim ----

// setupGPIOSim makes a bank of 8 simulated lines, line 0 named GPIO17 and
// line 1 GPIO27 (as on a Raspberry Pi), and returns the sysfs directory of
// its sim_gpioN attributes.
func setupGPIOSim() (string, error) {
	dev := "/sys/kernel/config/gpio-sim/gw"
	w := func(p, v string) error { return os.WriteFile(filepath.Join(dev, p), []byte(v), 0o644) }
	if err := os.MkdirAll(filepath.Join(dev, "bank0"), 0o755); err != nil {
		return "", err
	}
	if err := w("bank0/num_lines", "8"); err != nil {
		return "", err
	}
	for line, name := range map[string]string{"line0": "GPIO17", "line1": "GPIO27"} {
		if err := os.Mkdir(filepath.Join(dev, "bank0", line), 0o755); err != nil {
			return "", err
		}
		if err := w("bank0/"+line+"/name", name); err != nil {
			return "", err
		}
	}
	if err := w("live", "1"); err != nil {
		return "", err
	}
	chip := readTrim(filepath.Join(dev, "bank0/chip_name"))
	platform := readTrim(filepath.Join(dev, "dev_name"))
	if chip == "" || platform == "" {
		return "", errors.New("no chip_name or dev_name after live=1")
	}
	return filepath.Join("/sys/devices/platform", platform, chip), nil
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

func pull(sim string, line int, v string) error {
	return os.WriteFile(filepath.Join(sim, fmt.Sprintf("sim_gpio%d/pull", line)), []byte(v), 0o644)
}

// checkInput drives GPIO17 (line 0) through its pull and expects state and
// count to follow: every level change is one edge, and a burst of changes
// shorter than the debounce window is one change.
func checkInput(m *mailbox, sim string) error {
	st, cnt := prefix+"/door/state", prefix+"/door/count"
	if _, err := m.wait(st, 0, lastIs("OFF")); err != nil {
		return fmt.Errorf("initial state: %w", err)
	}
	if _, err := m.wait(cnt, 0, lastIs("0")); err != nil {
		return fmt.Errorf("initial count: %w", err)
	}
	steps := []struct {
		pulls []string
		state string
		count string
	}{
		{[]string{"pull-up"}, "ON", "1"},
		{[]string{"pull-down"}, "OFF", "2"},
		// A bouncing contact: five changes within the 1 s debounce window
		// end high; one change is published.
		{[]string{"pull-up", "pull-down", "pull-up", "pull-down", "pull-up"}, "ON", "3"},
		{[]string{"pull-down"}, "OFF", "4"},
	}
	for i, s := range steps {
		n := m.count(st)
		nc := m.count(cnt)
		for _, p := range s.pulls {
			if err := pull(sim, 0, p); err != nil {
				return err
			}
		}
		got, err := m.next(st, n)
		if err != nil {
			return fmt.Errorf("step %d %v: %w", i+1, s.pulls, err)
		}
		if got != s.state {
			return fmt.Errorf("step %d %v: state %s, want %s", i+1, s.pulls, got, s.state)
		}
		c, err := m.next(cnt, nc)
		if err != nil {
			return fmt.Errorf("step %d %v: %w", i+1, s.pulls, err)
		}
		if c != s.count {
			return fmt.Errorf("step %d %v: count %s, want %s (edges seen)", i+1, s.pulls, c, s.count)
		}
		logf("door: %v -> state %s count %s", s.pulls, got, c)
	}
	return nil
}

func lastIs(v string) func([]string) bool {
	return func(s []string) bool { return len(s) > 0 && s[len(s)-1] == v }
}

// checkOutput commands GPIO27 (line 1) through <topic>/set and reads the
// level gpio-sim sees.
func checkOutput(ctx context.Context, c *client.Client, m *mailbox, sim string) error {
	st := prefix + "/relay/state"
	val := filepath.Join(sim, "sim_gpio1/value")
	if _, err := m.wait(st, 0, lastIs("OFF")); err != nil {
		return fmt.Errorf("initial state: %w", err)
	}
	if v := readTrim(val); v != "0" {
		return fmt.Errorf("initial OFF: line value %q", v)
	}
	for _, cmd := range []struct{ set, state, level string }{{"ON", "ON", "1"}, {"OFF", "OFF", "0"}, {"TOGGLE", "ON", "1"}} {
		n := m.count(st)
		if err := c.Publish(ctx, &client.Message{Topic: prefix + "/relay/set", Payload: []byte(cmd.set), QoS: 1}); err != nil {
			return err
		}
		got, err := m.next(st, n)
		if err != nil {
			return fmt.Errorf("after %s: %w", cmd.set, err)
		}
		if v := readTrim(val); got != cmd.state || v != cmd.level {
			return fmt.Errorf("after %s: state %s, line value %s; want %s, %s", cmd.set, got, v, cmd.state, cmd.level)
		}
		logf("relay: set %s -> state %s, line %s", cmd.set, got, cmd.level)
	}
	return nil
}

// ---- BME280 on i2c-stub ----

// The registers: chip id, calibration (0x88..0xA1, 0xE1..0xE7) and one
// measurement (0xF7..0xFE: raw pressure, temperature, humidity).
var (
	calib1 = []byte{0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, 0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B,
		0x27, 0x0B, 0x8C, 0x00, 0xF9, 0xFF, 0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17, 0x00, 0x4B}
	calib2 = []byte{0x6A, 0x01, 0x00, 0x13, 0x27, 0x03, 0x1E}
	raw    = []byte{0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x6E, 0x8F}
)

func setupBME280() (int, error) {
	dirs, _ := filepath.Glob("/sys/class/i2c-dev/i2c-*")
	bus := -1
	for _, d := range dirs {
		if readTrim(filepath.Join(d, "name")) == stubName {
			bus, _ = strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "i2c-"))
		}
	}
	if bus < 0 {
		return 0, errors.New("no i2c-stub adapter")
	}
	f, err := os.OpenFile(fmt.Sprintf("/dev/i2c-%d", bus), os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), 0x0703, bmeAddr); e != 0 { // I2C_SLAVE
		return 0, e
	}
	put := func(reg int, vals []byte) error {
		for i, v := range vals {
			// I2C_SMBUS write byte data
			data := [34]byte{v}
			arg := struct {
				rw   uint8
				cmd  uint8
				size uint32
				data uintptr
			}{0, uint8(reg + i), 2, uintptr(unsafe.Pointer(&data))}
			if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), 0x0720, uintptr(unsafe.Pointer(&arg))); e != 0 {
				return fmt.Errorf("register %#x: %w", reg+i, e)
			}
		}
		return nil
	}
	for _, r := range []struct {
		reg  int
		vals []byte
	}{{0xD0, []byte{0x60}}, {0x88, calib1}, {0xE1, calib2}, {0xF7, raw}} {
		if err := put(r.reg, r.vals); err != nil {
			return 0, err
		}
	}
	return bus, nil
}

// expected computes temperature (°C), pressure (hPa) and humidity (%RH)
// from the registers with the BME280 datasheet's integer compensation
// (section 4.2.3 and 8.2).
func expected() (t, p, h float64) {
	u16 := func(b []byte, i int) int64 { return int64(b[i]) | int64(b[i+1])<<8 }
	s16 := func(b []byte, i int) int64 { return int64(int16(u16(b, i))) }
	T1, T2, T3 := u16(calib1, 0), s16(calib1, 2), s16(calib1, 4)
	P1, P2, P3, P4, P5 := u16(calib1, 6), s16(calib1, 8), s16(calib1, 10), s16(calib1, 12), s16(calib1, 14)
	P6, P7, P8, P9 := s16(calib1, 16), s16(calib1, 18), s16(calib1, 20), s16(calib1, 22)
	H1 := int64(calib1[25])
	H2, H3 := s16(calib2, 0), int64(calib2[2])
	H4 := int64(int8(calib2[3]))<<4 | int64(calib2[4]&0x0F)
	H5 := int64(int8(calib2[5]))<<4 | int64(calib2[4]>>4)
	H6 := int64(int8(calib2[6]))
	adcP := int64(raw[0])<<12 | int64(raw[1])<<4 | int64(raw[2])>>4
	adcT := int64(raw[3])<<12 | int64(raw[4])<<4 | int64(raw[5])>>4
	adcH := int64(raw[6])<<8 | int64(raw[7])

	// Temperature, int32 arithmetic.
	v1 := (((adcT >> 3) - (T1 << 1)) * T2) >> 11
	v2 := (((((adcT >> 4) - T1) * ((adcT >> 4) - T1)) >> 12) * T3) >> 14
	tFine := v1 + v2
	tc := (tFine*5 + 128) >> 8 // 0.01 °C

	// Pressure, int64 arithmetic.
	var pa float64
	{
		var1 := tFine - 128000
		var2 := var1 * var1 * P6
		var2 += (var1 * P5) << 17
		var2 += P4 << 35
		var1 = ((var1 * var1 * P3) >> 8) + ((var1 * P2) << 12)
		var1 = (((int64(1) << 47) + var1) * P1) >> 33
		if var1 != 0 {
			pp := 1048576 - adcP
			pp = (((pp << 31) - var2) * 3125) / var1
			var1 = (P9 * (pp >> 13) * (pp >> 13)) >> 25
			var2 = (P8 * pp) >> 19
			pp = ((pp + var1 + var2) >> 8) + (P7 << 4)
			pa = float64(pp) / 256 // Q24.8 Pa
		}
	}

	// Humidity, int32 arithmetic.
	x := tFine - 76800
	x = ((((adcH << 14) - (H4 << 20) - (H5 * x)) + 16384) >> 15) *
		(((((((x*H6)>>10)*(((x*H3)>>11)+32768))>>10)+2097152)*H2 + 8192) >> 14)
	x -= ((((x >> 15) * (x >> 15)) >> 7) * H1) >> 4
	x = max(0, min(x, 419430400))
	rh := float64(x>>12) / 1024

	return float64(tc) / 100, pa / 100, rh
}

func checkBME280(m *mailbox) error {
	wt, wp, wh := expected()
	logf("climate: datasheet formula gives %.2f °C, %.2f hPa, %.1f %%RH", wt, wp, wh)
	for _, c := range []struct {
		ch   string
		want float64
		tol  float64 // one unit of the published precision
	}{{"temperature", wt, 0.01}, {"pressure", wp, 0.01}, {"humidity", wh, 0.1}} {
		s, err := m.next(prefix+"/climate/"+c.ch, 0)
		if err != nil {
			return err
		}
		got, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%s: %q: %w", c.ch, s, err)
		}
		if math.Abs(got-c.want) > c.tol+1e-9 {
			return fmt.Errorf("%s %s, want %.3f ± %g", c.ch, s, c.want, c.tol)
		}
		logf("climate: %s %s", c.ch, s)
	}
	return nil
}

// ---- NMEA on the serial port, fed by the host ----

// The host sends $GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,...
// (with RMC and GSA) over and over.
func checkNMEA(m *mailbox) error {
	want := map[string]float64{"latitude": 48 + 7.038/60, "longitude": 11 + 31.0/60, "altitude": 545.4}
	fix, err := m.next(prefix+"/gps/fix", 0)
	if err != nil {
		return err
	}
	if f, err := strconv.ParseFloat(fix, 64); err != nil || f <= 0 {
		return fmt.Errorf("fix %q, want a fix (above 0)", fix)
	}
	for ch, w := range want {
		s, err := m.next(prefix+"/gps/"+ch, 0)
		if err != nil {
			return err
		}
		got, err := strconv.ParseFloat(s, 64)
		if err != nil || math.Abs(got-w) > 1e-5 {
			return fmt.Errorf("%s %q, want %.6f", ch, s, w)
		}
		logf("gps: %s %s", ch, s)
	}
	logf("gps: fix %s", fix)
	return nil
}
