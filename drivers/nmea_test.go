package drivers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"go.bug.st/serial"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
)

// ptyHardware is a Hardware whose serial ports are pseudo-terminals: each
// Serial call makes a fresh pty, opens its slave side the way the gateway
// opens a real port (go.bug.st/serial, raw mode, exclusive), and hands the
// master side to the test, which plays the device. Closing a master is
// unplugging the device.
type ptyHardware struct {
	t       *testing.T
	masters chan *os.File
	mu      sync.Mutex
	opened  []string // ports asked for, in order
	missing bool     // under mu: Serial fails, as for an adapter not plugged in
	root    string
	w1      string
}

func newPtyHardware(t *testing.T) *ptyHardware {
	return &ptyHardware{t: t, masters: make(chan *os.File, 4), root: "/"}
}

func (h *ptyHardware) Serial(port string, baud int) (io.ReadWriteCloser, error) {
	h.mu.Lock()
	missing := h.missing
	h.mu.Unlock()
	if missing {
		return nil, fmt.Errorf("test: open %s: %w", port, os.ErrNotExist)
	}
	master, slave, err := pty.Open()
	if err != nil {
		return nil, err
	}
	path := slave.Name()
	p, err := serial.Open(path, &serial.Mode{BaudRate: baud})
	slave.Close() // the port holds the slave open from now on
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("test: open pty slave %s: %w", path, err)
	}
	h.mu.Lock()
	h.opened = append(h.opened, port)
	h.mu.Unlock()
	h.t.Cleanup(func() { master.Close() })
	h.masters <- master
	return p, nil
}

// setMissing unplugs (true) or plugs in (false) the serial adapter for the
// next Serial calls.
func (h *ptyHardware) setMissing(v bool) {
	h.mu.Lock()
	h.missing = v
	h.mu.Unlock()
}

// master waits for the driver to open its port and returns the device side.
func (h *ptyHardware) master() *os.File {
	h.t.Helper()
	select {
	case m := <-h.masters:
		return m
	case <-time.After(waitLimit):
		h.t.Fatal("the driver did not open its serial port")
		return nil
	}
}

func (h *ptyHardware) I2C(bus string) (i2c.Bus, error)     { return nil, errors.New("test: no I2C") }
func (h *ptyHardware) Pin(name string) (gpio.PinIO, error) { return nil, errors.New("test: no GPIO") }
func (h *ptyHardware) OneWireDir() string                  { return h.w1 }
func (h *ptyHardware) Root() string                        { return h.root }

// sourceRun runs a Source's Run on its own goroutine, collecting what it
// emits, as the Runner would.
type sourceRun struct {
	t    *testing.T
	rds  chan Reading
	done chan error
}

func startSource(t *testing.T, ctx context.Context, src Source) *sourceRun {
	r := &sourceRun{t: t, rds: make(chan Reading, 1024), done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, func(rd Reading) { r.rds <- rd }) }()
	return r
}

// until collects readings up to and including the first on channel last.
func (r *sourceRun) until(last string) map[string]Reading {
	r.t.Helper()
	got := map[string]Reading{}
	for {
		select {
		case rd := <-r.rds:
			got[rd.Channel] = rd
			if rd.Channel == last {
				return got
			}
		case err := <-r.done:
			r.t.Fatalf("Run returned %v before a reading on %s; got %v", err, last, got)
		case <-time.After(waitLimit):
			r.t.Fatalf("no reading on %s; got %v", last, got)
		}
	}
}

// wait returns Run's result.
func (r *sourceRun) wait() error {
	r.t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(waitLimit):
		r.t.Fatal("Run did not return")
		return nil
	}
}

func writeLines(t *testing.T, w io.Writer, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if _, err := io.WriteString(w, l+"\r\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func openTestDevice(t *testing.T, cfg DeviceConfig, hw Hardware) Device {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	dev, err := Open(cfg, Env{Hardware: hw, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return dev
}

func wantValue(t *testing.T, got map[string]Reading, ch string, want float64) {
	t.Helper()
	rd, ok := got[ch]
	switch {
	case !ok:
		t.Errorf("%s: no reading", ch)
	case rd.IsText:
		t.Errorf("%s: text %q, want %v", ch, rd.Text, want)
	case !approx(rd.Value, want):
		t.Errorf("%s = %v, want %v", ch, rd.Value, want)
	}
}

func wantText(t *testing.T, got map[string]Reading, ch, want string) {
	t.Helper()
	rd, ok := got[ch]
	switch {
	case !ok:
		t.Errorf("%s: no reading", ch)
	case !rd.IsText || rd.Text != want:
		t.Errorf("%s = %+v, want text %q", ch, rd, want)
	}
}

func approx(a, b float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= 1e-6*max(1, abs(a), abs(b))
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

// nmeaLine completes a sentence body ("GPGGA,...") with '$' and its checksum.
func nmeaLine(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	return fmt.Sprintf("$%s*%02X", body, sum)
}

// nmeaEpoch1 is one second of a GPS receiver's output, in the order u-blox
// modules send it.
var nmeaEpoch1 = []string{
	nmeaLine("GPRMC,123519.00,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W,A"),
	nmeaLine("GPVTG,084.4,T,081.2,M,022.4,N,041.5,K,A"),
	nmeaLine("GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"),
	nmeaLine("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1"),
	nmeaLine("GPGSV,2,1,08,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45"),
	nmeaLine("GPGSV,2,2,08,15,10,100,30,17,50,200,44,19,33,150,40,24,12,050,35"),
	nmeaLine("GLGSV,1,1,03,65,30,100,30,66,50,200,44,67,33,150,40"),
}

func TestNMEAOverPty(t *testing.T) {
	noLeaks(t)
	hw := newPtyHardware(t)
	dev := openTestDevice(t, DeviceConfig{Name: "gps", Driver: "nmea", Port: "/dev/ttyACM0"}, hw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := startSource(t, ctx, dev.(Source))
	m := hw.master()

	writeLines(t, m, nmeaEpoch1...)
	// A sentence damaged on the wire: one digit of the latitude changed
	// after the checksum was computed. It must not move the position.
	bad := nmeaLine("GPGGA,123519.50,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
	bad = strings.Replace(bad, "4807.038", "4907.038", 1)
	writeLines(t, m, bad)
	// The next second's first sentence completes the first set.
	writeLines(t, m, nmeaLine("GPRMC,123520.00,A,4807.040,N,01131.002,E,022.4,084.4,230394,003.1,W,A"))

	got := run.until(nmeaBadChecksums)
	wantValue(t, got, nmeaFix, 3)
	wantValue(t, got, nmeaFixQuality, 1)
	wantValue(t, got, nmeaLatitude, 48+7.038/60)
	wantValue(t, got, nmeaLongitude, 11+31.0/60)
	wantValue(t, got, nmeaAltitude, 545.4)
	wantValue(t, got, nmeaSpeed, 41.5) // VTG's km/h, sent after RMC's knots
	wantValue(t, got, nmeaCourse, 84.4)
	wantValue(t, got, nmeaSatellites, 8) // GGA's count, not GSA's list of 5
	wantValue(t, got, nmeaInView, 8+3)
	wantValue(t, got, nmeaHDOP, 0.9)
	wantValue(t, got, nmeaBadChecksums, 1)
	if n := dev.(*nmeaDevice).BadChecksums(); n != 1 {
		t.Errorf("BadChecksums = %d, want 1", n)
	}
	if got[nmeaLatitude].Unit != "°" || got[nmeaAltitude].Unit != "m" || got[nmeaSpeed].Unit != "km/h" {
		t.Errorf("units: %+v %+v %+v", got[nmeaLatitude], got[nmeaAltitude], got[nmeaSpeed])
	}

	// Unplugging the receiver ends Run with an error, so that the Runner
	// calls it again.
	m.Close()
	if err := run.wait(); !errors.Is(err, errPortClosed) {
		t.Fatalf("Run after unplug = %v, want %v", err, errPortClosed)
	}

	// Plugged back: Run opens the port again. A multi-constellation receiver
	// in the southern and western hemispheres, below sea level, no GSA.
	run = startSource(t, ctx, dev.(Source))
	m = hw.master()
	writeLines(t, m,
		nmeaLine("GNGGA,000001.00,3342.6618,S,15112.2590,W,2,12,0.8,-12.5,M,22.0,M,,"),
		nmeaLine("GNRMC,000001.00,A,3342.6618,S,15112.2590,W,0.50,271.3,010125,,,D"),
		nmeaLine("GNGGA,000002.00,3342.6620,S,15112.2592,W,2,12,0.8,-12.5,M,22.0,M,,"),
	)
	got = run.until(nmeaBadChecksums)
	wantValue(t, got, nmeaFix, 3)
	wantValue(t, got, nmeaFixQuality, 2)
	wantValue(t, got, nmeaLatitude, -(33 + 42.6618/60))
	wantValue(t, got, nmeaLongitude, -(151 + 12.2590/60))
	wantValue(t, got, nmeaAltitude, -12.5)
	wantValue(t, got, nmeaSatellites, 12)
	wantValue(t, got, nmeaSpeed, 0.5*1.852)
	wantValue(t, got, nmeaCourse, 271.3)
	wantValue(t, got, nmeaBadChecksums, 1) // counted since the device was opened
	if _, ok := got[nmeaInView]; ok {
		t.Errorf("satellites_in_view published without a GSV: %+v", got[nmeaInView])
	}
	cancel()
	if err := run.wait(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if len(hw.opened) != 2 {
		t.Errorf("ports opened: %q, want two opens", hw.opened)
	}
}

// Without a fix the receiver still talks: fix 0 and satellites are
// published, no position.
func TestNMEANoFixPublishesNoPosition(t *testing.T) {
	noLeaks(t)
	hw := newPtyHardware(t)
	dev := openTestDevice(t, DeviceConfig{Name: "gps", Driver: "nmea", Port: "serial0"}, hw)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := startSource(t, ctx, dev.(Source))
	m := hw.master()
	writeLines(t, m,
		nmeaLine("GPRMC,,V,,,,,,,,,,N"),
		nmeaLine("GPGGA,,,,,,0,00,99.99,,,,,,"),
		nmeaLine("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99"),
		nmeaLine("GPGSV,1,1,02,10,,,25,12,,,20"),
		nmeaLine("GPRMC,,V,,,,,,,,,,N"),
	)
	got := run.until(nmeaBadChecksums)
	wantValue(t, got, nmeaFix, 0)
	wantValue(t, got, nmeaFixQuality, 0)
	wantValue(t, got, nmeaSatellites, 0)
	wantValue(t, got, nmeaInView, 2)
	for _, ch := range []string{nmeaLatitude, nmeaLongitude, nmeaAltitude, nmeaSpeed, nmeaCourse} {
		if rd, ok := got[ch]; ok {
			t.Errorf("%s published without a fix: %+v", ch, rd)
		}
	}
	cancel()
	if err := run.wait(); err != nil {
		t.Errorf("Run after cancel = %v", err)
	}
}

func TestParseNMEA(t *testing.T) {
	good := nmeaLine("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
	tests := []struct {
		name    string
		line    string
		wantErr error
		talker  string
		typ     string
	}{
		{"good", good, nil, "GP", "GGA"},
		{"spec example", "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47", nil, "GP", "GGA"},
		{"lower-case checksum", "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6a", nil, "GP", "RMC"},
		{"bad checksum", "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48", errNMEAChecksum, "", ""},
		{"no checksum", "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,", errNMEAFormat, "", ""},
		{"checksum not hex", "$GPGGA,1*ZZ", errNMEAFormat, "", ""},
		{"no dollar", "GPGGA,123519*47", errNMEAFormat, "", ""},
		{"empty", "", errNMEAFormat, "", ""},
		{"cut line", "$GPGGA,1235", errNMEAFormat, "", ""},
		{"other talker", nmeaLine("AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0"), errNMEATalker, "", ""},
		{"proprietary", nmeaLine("PUBX,00,081350.00"), errNMEAFormat, "", ""},
		{"galileo", nmeaLine("GAGSV,1,1,01,02,10,100,30"), nil, "GA", "GSV"},
		{"beidou old", nmeaLine("BDGSV,1,1,01,02,10,100,30"), nil, "BD", "GSV"},
		{"beidou 4.10", nmeaLine("GBGSV,1,1,01,02,10,100,30"), nil, "GB", "GSV"},
		{"glonass", nmeaLine("GLGSV,1,1,01,65,10,100,30"), nil, "GL", "GSV"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parseNMEA(tt.line + "\r\n")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("parseNMEA(%q) = %v, want %v", tt.line, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseNMEA(%q): %v", tt.line, err)
			}
			if s.Talker != tt.talker || s.Type != tt.typ {
				t.Errorf("parseNMEA(%q) = %s %s, want %s %s", tt.line, s.Talker, s.Type, tt.talker, tt.typ)
			}
		})
	}
}

func TestNMEACoordinates(t *testing.T) {
	tests := []struct {
		f, hemi string
		max     float64
		want    float64
		ok      bool
		err     bool
	}{
		{"4807.038", "N", 90, 48.1173, true, false},
		{"4807.038", "S", 90, -48.1173, true, false},
		{"01131.000", "E", 180, 11 + 31.0/60, true, false},
		{"01131.000", "W", 180, -(11 + 31.0/60), true, false},
		{"0000.000", "N", 90, 0, true, false},
		{"", "", 90, 0, false, false},
		{"4867.000", "N", 90, 0, false, true}, // 67 minutes
		{"9100.000", "N", 90, 0, false, true},
		{"4807.038", "X", 90, 0, false, true},
		{"48a7.038", "N", 90, 0, false, true},
		{"-4807.038", "N", 90, 0, false, true},
	}
	for _, tt := range tests {
		v, ok, err := nmeaCoord(tt.f, tt.hemi, tt.max)
		if (err != nil) != tt.err || ok != tt.ok || !approx(v, tt.want) {
			t.Errorf("nmeaCoord(%q, %q) = %v, %v, %v; want %v, %v, error %v", tt.f, tt.hemi, v, ok, err, tt.want, tt.ok, tt.err)
		}
	}
}

// apply folds sentences into a state; it fails the test on a parse error.
func nmeaApply(t *testing.T, st *gpsState, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		s, err := parseNMEA(nmeaLine(b))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.apply(s); err != nil {
			t.Fatalf("apply %s: %v", b, err)
		}
	}
}

func TestNMEAStateSentences(t *testing.T) {
	t.Run("GSA of several constellations add up", func(t *testing.T) {
		var st gpsState
		nmeaApply(t, &st,
			"GNGSA,A,3,01,02,03,,,,,,,,,,1.8,1.0,1.5,1",
			"GNGSA,A,3,65,66,,,,,,,,,,,1.8,1.0,1.5,2",
			"GNGSV,1,1,00", // ends the run
		)
		if n, ok := st.SatellitesInUse(); !ok || n != 5 {
			t.Errorf("in use = %d, %v; want 5 from the GSA lists", n, ok)
		}
		nmeaApply(t, &st, "GNGSA,A,3,01,,,,,,,,,,,,1.8,1.2,1.5,1")
		if n, _ := st.SatellitesInUse(); n != 1 {
			t.Errorf("a new run of GSA: in use = %d, want 1", n)
		}
		if st.Fix() != 3 || !approx(st.HDOP, 1.2) {
			t.Errorf("fix %d hdop %v, want 3 and 1.2 (GSA's, no GGA)", st.Fix(), st.HDOP)
		}
	})
	t.Run("VTG before NMEA 2.0", func(t *testing.T) {
		var st gpsState
		nmeaApply(t, &st, "GPVTG,054.7,034.4,005.5,010.2")
		if !st.HasSpeed || !approx(st.SpeedKmh, 10.2) || !approx(st.Course, 54.7) {
			t.Errorf("speed %v course %v", st.SpeedKmh, st.Course)
		}
	})
	t.Run("VTG with knots only", func(t *testing.T) {
		var st gpsState
		nmeaApply(t, &st, "GPVTG,10.0,T,,M,10.0,N,,K,A")
		if !approx(st.SpeedKmh, 18.52) {
			t.Errorf("speed %v, want 18.52", st.SpeedKmh)
		}
	})
	t.Run("RMC void clears the position", func(t *testing.T) {
		var st gpsState
		nmeaApply(t, &st, "GPRMC,1,A,4807.038,N,01131.000,E,1.0,10.0,230394,,")
		if !st.HasPos {
			t.Fatal("no position after a valid RMC")
		}
		nmeaApply(t, &st, "GPRMC,2,V,4807.038,N,01131.000,E,1.0,10.0,230394,,")
		if st.HasPos || st.HasSpeed {
			t.Errorf("position kept after a void RMC: %+v", st)
		}
	})
	t.Run("a sentence that does not parse changes nothing", func(t *testing.T) {
		var st gpsState
		nmeaApply(t, &st, "GPGGA,1,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
		before := st
		s, _ := parseNMEA(nmeaLine("GPGGA,2,4807.038,N,01131.000,E,1,xx,0.9,1.0,M,46.9,M,,"))
		if err := st.apply(s); !errors.Is(err, errNMEAFormat) {
			t.Fatalf("apply = %v, want %v", err, errNMEAFormat)
		}
		if st.Alt != before.Alt || st.SatsUsed != before.SatsUsed {
			t.Errorf("state changed by a bad sentence")
		}
	})
}

func TestNMEAEpochs(t *testing.T) {
	var e nmeaEpoch
	steps := []struct {
		body string
		want bool
	}{
		{"GPRMC,1,A,,,,,,,,,", false},
		{"GPGGA,1,,,,,0,,,,,,,,", false},
		{"GPGSA,A,1,,,,,,,,,,,,,,,", false},
		{"GPRMC,2,A,,,,,,,,,", true}, // new time
		{"GPGGA,2,,,,,0,,,,,,,,", false},
		{"GPGGA,,,,,,0,,,,,,,,", true}, // time gone: a new set
		{"GPGGA,,,,,,0,,,,,,,,", true}, // same (empty) time, GGA again: a new set
	}
	for i, s := range steps {
		p, err := parseNMEA(nmeaLine(s.body))
		if err != nil {
			t.Fatal(err)
		}
		if got := e.next(p); got != s.want {
			t.Errorf("step %d %s: completed = %v, want %v", i, s.body, got, s.want)
		}
	}
}

// Through the Runner and the broker: the receiver is unplugged, the Runner
// marks the device offline and calls Run again, which opens a fresh port.
func TestNMEAThroughRunnerReopens(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	sub := subscribe(t, b, "gatewayd/gw1/gps/#")
	hw := newPtyHardware(t)
	cfg := DefaultConfig()
	cfg.Devices = []DeviceConfig{{Name: "gps", Driver: "nmea", Port: "/dev/ttyACM0"}}
	startRunner(t, b, cfg, hw)

	m := hw.master()
	writeLines(t, m, nmeaEpoch1...)
	writeLines(t, m, nmeaLine("GPRMC,123520.00,A,4807.040,N,01131.002,E,022.4,084.4,230394,003.1,W,A"))
	i := sub.expect(0, "gatewayd/gw1/gps/latitude", "48.117300")
	sub.expect(0, "gatewayd/gw1/gps/longitude", "11.516667")
	sub.expect(0, "gatewayd/gw1/gps/altitude", "545.4")
	sub.expect(0, "gatewayd/gw1/gps/satellites", "8")
	sub.expect(0, "gatewayd/gw1/gps/fix", "3")

	m.Close() // unplugged
	i = sub.expect(i, "gatewayd/gw1/gps/status", Offline)

	m = hw.master() // plugged back: the Runner ran the device again
	writeLines(t, m,
		nmeaLine("GNGGA,000001.00,3342.6618,S,15112.2590,W,1,05,1.5,20.0,M,22.0,M,,"),
		nmeaLine("GNGGA,000002.00,3342.6618,S,15112.2590,W,1,05,1.5,20.0,M,22.0,M,,"),
	)
	sub.expect(i, "gatewayd/gw1/gps/latitude", "-33.711030")
	sub.expect(i, "gatewayd/gw1/gps/status", Online)
}

func TestNMEAFixLostBeforeGSA(t *testing.T) {
	var st gpsState
	nmeaApply(t, &st,
		"GPGGA,1,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
		"GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1",
	)
	if st.Fix() != 3 {
		t.Fatalf("fix %d, want 3", st.Fix())
	}
	nmeaApply(t, &st, "GPGGA,2,,,,,0,00,99.99,,,,,,")
	if st.Fix() != 0 || st.HasPos {
		t.Errorf("after GGA quality 0 (GSA not yet sent): fix %d, position %v; want 0, none", st.Fix(), st.HasPos)
	}
}
