package drivers

// serial-line: any sensor that writes one line of text per measurement on a
// serial port. A line is split either by a regular expression whose named
// groups are the channels, or as separated values whose columns are named by
// `fields`. A value that parses as a number is published as a number, any
// other as text; nan and inf (what a microcontroller prints for a failed
// measurement) are left out, as modbus-rtu leaves out a float32 that is not a
// number, and the line is counted in bad_lines. A line that does not match,
// or leaves no value, is counted and dropped.
//
// This file also holds what the serial drivers (nmea, serial-line) share:
// opening the port through the Hardware and reading lines from it until the
// context ends.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/config"
)

func init() {
	Register("serial-line", openSerialLine)
	RegisterCheck("serial-line", checkSerialLine)
}

// maxLineLen bounds one line: a device that never sends a newline (wrong
// baud rate, binary protocol) must not grow the buffer without bound.
const maxLineLen = 4096

// DefaultSerialBaud is the baud rate of a serial device whose configuration
// has none.
const DefaultSerialBaud = 9600

// errPortClosed is what Run returns when the device went away (unplugged
// USB adapter, closed port): the Runner then calls Run again, which opens
// the port again.
var errPortClosed = errors.New("serial port closed")

// openSerial opens cfg's port through the Hardware at cfg's baud rate, or
// def when none is configured.
func openSerial(cfg *DeviceConfig, env Env, def int) (io.ReadWriteCloser, error) {
	if env.Hardware == nil {
		return nil, fmt.Errorf("%s: no hardware to open serial port %s", cfg.Driver, cfg.Port)
	}
	baud := cfg.Baud
	if baud == 0 {
		baud = def
	}
	p, err := env.Hardware.Serial(cfg.Port, baud)
	if err != nil {
		return nil, fmt.Errorf("%s: serial port %s at %d baud: %w", cfg.Driver, cfg.Port, baud, err)
	}
	return p, nil
}

// readLines calls fn with every line read from port (without its CR LF)
// until ctx ends (nil) or the port fails (an error wrapping errPortClosed or
// the read error). A line longer than maxLineLen is passed cut, with tooLong
// set, and the rest of it skipped. The port is closed on return.
func readLines(ctx context.Context, port io.ReadWriteCloser, fn func(line []byte, tooLong bool)) error {
	var once sync.Once
	closePort := func() { once.Do(func() { port.Close() }) }
	// Closing the port is what interrupts a blocked Read when ctx ends.
	stop := context.AfterFunc(ctx, closePort)
	defer func() {
		stop()
		closePort() // if the AfterFunc is closing the port, waits for it
	}()

	r := bufio.NewReaderSize(port, maxLineLen)
	skipping := false
	for {
		line, err := r.ReadSlice('\n')
		switch {
		case err == nil:
			if skipping {
				skipping = false
				continue
			}
			fn(trimEOL(line), false)
			continue
		case errors.Is(err, bufio.ErrBufferFull):
			if !skipping {
				fn(line, true)
				skipping = true
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == io.EOF {
			return errPortClosed
		}
		return fmt.Errorf("%w: %w", errPortClosed, err)
	}
}

func trimEOL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// serialLineSettings are the serial-line keys of a device's configuration.
type serialLineSettings struct {
	Regex     string   // named groups are channels
	Fields    []string // CSV column names; "" skips a column
	Separator string   // CSV separator; empty: ","
}

// lineParser turns one line into named values.
type lineParser struct {
	re     *regexp.Regexp
	names  []string // regex: group names by index ("" unnamed); CSV: column names
	sep    string
	fields int // CSV: number of columns expected at least
}

func newLineParser(s serialLineSettings) (*lineParser, error) {
	if s.Regex != "" && len(s.Fields) > 0 {
		return nil, errors.New("regex and fields are exclusive: use one")
	}
	if s.Regex != "" {
		re, err := regexp.Compile(s.Regex)
		if err != nil {
			return nil, fmt.Errorf("regex: %w", err)
		}
		names := re.SubexpNames()
		n := 0
		for _, nm := range names {
			if nm != "" {
				if err := checkChannelName(nm); err != nil {
					return nil, fmt.Errorf("regex group %q: %w", nm, err)
				}
				n++
			}
		}
		if n == 0 {
			return nil, fmt.Errorf("regex %q has no named group ((?P<name>...)): nothing to publish", s.Regex)
		}
		return &lineParser{re: re, names: names}, nil
	}
	if len(s.Fields) == 0 {
		return nil, errors.New("either regex (named groups) or fields (column names) is required")
	}
	n := 0
	seen := map[string]bool{}
	for _, nm := range s.Fields {
		if nm == "" {
			continue
		}
		if err := checkChannelName(nm); err != nil {
			return nil, fmt.Errorf("field %q: %w", nm, err)
		}
		if seen[nm] {
			return nil, fmt.Errorf("field %q named twice", nm)
		}
		seen[nm] = true
		n++
	}
	if n == 0 {
		return nil, errors.New("fields are all empty: nothing to publish")
	}
	sep := s.Separator
	if sep == "" {
		sep = ","
	}
	last := len(s.Fields)
	for last > 0 && s.Fields[last-1] == "" {
		last--
	}
	return &lineParser{names: s.Fields, sep: sep, fields: last}, nil
}

// checkChannelName refuses a name that cannot be one topic level.
func checkChannelName(n string) error {
	if n == "" || strings.ContainsAny(n, "+#/") {
		return errors.New("not usable as one topic level")
	}
	return nil
}

// channels lists the channel names the parser produces, in order.
func (p *lineParser) channels() []string {
	var out []string
	for _, n := range p.names {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// parse splits a line; ok is false for a line that does not fit (no regex
// match, too few columns, no value at all). failed counts the values left out
// for not being numbers (nan, inf).
func (p *lineParser) parse(line string, now time.Time) (out []Reading, ok bool, failed int) {
	add := func(name, v string) {
		v = strings.TrimSpace(v)
		if name == "" || v == "" {
			return
		}
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			if math.IsNaN(f) || math.IsInf(f, 0) {
				failed++ // a failed measurement: no value
				return
			}
			out = append(out, Reading{Channel: name, Value: f, Time: now})
		} else {
			out = append(out, Reading{Channel: name, Text: v, IsText: true, Time: now})
		}
	}
	if p.re != nil {
		m := p.re.FindStringSubmatch(line)
		if m == nil {
			return nil, false, 0
		}
		for i, v := range m {
			add(p.names[i], v)
		}
		return out, len(out) > 0, failed
	}
	cols := strings.Split(line, p.sep)
	if len(cols) < p.fields {
		return nil, false, 0
	}
	for i, v := range cols {
		if i < len(p.names) {
			add(p.names[i], v)
		}
	}
	return out, len(out) > 0, failed
}

// channelMeta guesses Home Assistant metadata from a channel's name, so
// that a device whose values are named temperature or humidity is announced
// usefully without settings. Unknown names get no state class: they may be
// text.
func channelMeta(name string) ChannelInfo {
	in := ChannelInfo{Channel: name, Component: ComponentSensor, Precision: -1}
	// pm2_5 is one word (PM2.5), not pm2 and 5.
	lower := strings.ReplaceAll(strings.ToLower(name), "pm2_5", "pm25")
	tokens := strings.FieldsFunc(lower, func(r rune) bool {
		return !('a' <= r && r <= 'z' || '0' <= r && r <= '9')
	})
	has := func(prefixes ...string) bool {
		for _, t := range tokens {
			for _, p := range prefixes {
				if strings.HasPrefix(t, p) {
					return true
				}
			}
		}
		return false
	}
	set := func(class, unit string) {
		in.DeviceClass, in.Unit, in.StateClass = class, unit, "measurement"
	}
	switch {
	case has("temp"):
		set("temperature", "°C")
	case has("humid", "rh"):
		set("humidity", "%")
	case has("press"):
		set("pressure", "hPa")
	case has("co2"):
		set("carbon_dioxide", "ppm")
	case has("pm25"):
		set("pm25", "µg/m³")
	case has("pm10"):
		set("pm10", "µg/m³")
	case has("volt"):
		set("voltage", "V")
	case has("current", "amp"):
		set("current", "A")
	case has("energy", "kwh"):
		set("energy", "kWh")
		in.StateClass = "total_increasing"
	case has("power", "watt"):
		set("power", "W")
	case has("freq"):
		set("frequency", "Hz")
	case has("lux", "illum"):
		set("illuminance", "lx")
	case has("level", "percent"):
		in.Unit, in.StateClass = "%", "measurement"
	}
	return in
}

// serialLine is a serial-line device.
type serialLine struct {
	cfg      DeviceConfig
	env      Env
	parser   *lineParser
	interval time.Duration
	units    map[string]string // channel -> unit guessed from its name

	badLines atomic.Uint64
}

func openSerialLine(cfg DeviceConfig, env Env) (Device, error) {
	if err := checkSerialLine(&cfg); err != nil {
		return nil, err
	}
	p, err := newLineParser(serialLineSettingsOf(&cfg))
	if err != nil {
		return nil, err
	}
	units := map[string]string{}
	for _, n := range p.channels() {
		units[n] = channelMeta(n).Unit
	}
	return &serialLine{cfg: cfg, env: env, parser: p, interval: cfg.Interval, units: units}, nil
}

func checkSerialLine(cfg *DeviceConfig) error {
	var errs []error
	if cfg.Port == "" {
		errs = append(errs, config.Errorf("port", "port is required (/dev/ttyUSB0, serial0)"))
	}
	s := serialLineSettingsOf(cfg)
	if _, err := newLineParser(s); err != nil {
		key := "fields"
		if s.Regex != "" {
			key = "regex"
		}
		errs = append(errs, config.Errorf(key, "%v", err))
	}
	return errors.Join(errs...)
}

// Channels lists the parsed values and bad_lines, the count of lines that
// did not fit or held a failed measurement.
func (d *serialLine) Channels() []ChannelInfo {
	var out []ChannelInfo
	for _, n := range d.parser.channels() {
		out = append(out, channelMeta(n))
	}
	return append(out, ChannelInfo{Channel: "bad_lines", StateClass: "total_increasing", Component: ComponentSensor, Precision: 0})
}

func (d *serialLine) Close() error { return nil }

// BadLines is the number of lines dropped since the device was opened.
func (d *serialLine) BadLines() uint64 { return d.badLines.Load() }

// Run reads lines until ctx ends or the port goes away. With an interval,
// a line is published only when the interval has passed since the last one
// published; the others are read and dropped.
func (d *serialLine) Run(ctx context.Context, emit func(Reading)) error {
	port, err := openSerial(&d.cfg, d.env, DefaultSerialBaud)
	if err != nil {
		return err
	}
	if d.env.Up != nil {
		d.env.Up()
	}
	var (
		last, lastBad time.Time
		reported      uint64
		sent          bool
	)
	reportBad := func(now time.Time) {
		if n := d.badLines.Load(); n != reported || !sent {
			emit(Reading{Channel: "bad_lines", Value: float64(n), Time: now})
			reported, sent, lastBad = n, true, now
		}
	}
	return readLines(ctx, port, func(line []byte, tooLong bool) {
		now := time.Now()
		var rds []Reading
		ok, failed := false, 0
		if !tooLong {
			rds, ok, failed = d.parser.parse(string(line), now)
		}
		if ok && failed > 0 {
			// Its other values go out; the failed measurement is counted.
			d.badLines.Add(1)
		}
		if !ok {
			d.badLines.Add(1)
			d.env.Logger.Debug("line dropped", "line", clip(string(line)))
			// A device sending nothing but garbage (wrong baud rate) shows
			// it, without a message per line.
			if now.Sub(lastBad) >= max(d.interval, time.Second) {
				reportBad(now)
			}
			return
		}
		if d.interval > 0 && !last.IsZero() && now.Sub(last) < d.interval {
			return
		}
		last = now
		for _, rd := range rds {
			rd.Unit = d.units[rd.Channel]
			emit(rd)
		}
		reportBad(now)
	})
}

// serialLineSettingsOf reads the serial-line keys of cfg.
func serialLineSettingsOf(cfg *DeviceConfig) serialLineSettings {
	return serialLineSettings{Regex: cfg.Regex, Fields: cfg.Fields, Separator: cfg.Separator}
}
