package drivers

// ds18b20: 1-Wire temperature sensors (DS18B20, DS18S20, DS1822, DS1825,
// MAX31850) through the kernel's w1 driver: each sensor is a directory
// <family>-<serial> under /sys/bus/w1/devices whose w1_slave file holds the
// scratchpad, the kernel's CRC verdict and the temperature in millidegrees.
// A reading whose CRC the kernel did not accept, the 85 °C power-on value
// (the sensor reset before converting, typically a weak supply) and an
// all-zero scratchpad (the bus held low) are errors, never temperatures.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/config"
)

func init() {
	Register("ds18b20", openDS18B20)
	RegisterCheck("ds18b20", checkDS18B20)
}

// DefaultOneWireDir is where the kernel lists 1-Wire devices.
const DefaultOneWireDir = "/sys/bus/w1/devices"

// w1TempFamilies are the 1-Wire family codes of the temperature sensors the
// kernel's w1_therm driver reads.
var w1TempFamilies = []string{"10", "22", "28", "3b", "42"}

var (
	errW1CRC     = errors.New("CRC check failed")
	errW1PowerOn = errors.New("85.000 °C power-on value: the sensor reset before converting (check its supply)")
	errW1Zero    = errors.New("all-zero scratchpad: the bus is held low")
)

// ds18b20Sensor is one configured sensor: its id and its channel.
type ds18b20Sensor struct {
	id, channel string
}

// ds18b20Sensors parses the sensors list: "28-0316a2795aff" publishes on
// a channel named after the id, "28-0316a2795aff=kitchen" on kitchen.
func ds18b20Sensors(list []string) ([]ds18b20Sensor, error) {
	var (
		out      []ds18b20Sensor
		errs     []error
		ids, chs = map[string]bool{}, map[string]bool{}
	)
	for i, s := range list {
		key := fmt.Sprintf("sensors[%d]", i)
		id, ch, named := strings.Cut(strings.TrimSpace(s), "=")
		id, ch = strings.ToLower(strings.TrimSpace(id)), strings.TrimSpace(ch)
		if !named {
			ch = id
		}
		if !isW1TempID(id) {
			errs = append(errs, config.Errorf(key, "%q is not a 1-Wire temperature sensor id (28-0316a2795aff)", id))
			continue
		}
		if err := checkChannelName(ch); err != nil {
			errs = append(errs, config.Errorf(key, "channel %q: %v", ch, err))
			continue
		}
		if ids[id] || chs[ch] {
			errs = append(errs, config.Errorf(key, "%q listed twice", s))
			continue
		}
		ids[id], chs[ch] = true, true
		out = append(out, ds18b20Sensor{id: id, channel: ch})
	}
	return out, errors.Join(errs...)
}

// isW1TempID reports whether id is <family>-<12 hex digits> of a
// temperature sensor family.
func isW1TempID(id string) bool {
	fam, serial, ok := strings.Cut(id, "-")
	if !ok || !slices.Contains(w1TempFamilies, strings.ToLower(fam)) || len(serial) != 12 {
		return false
	}
	_, err := strconv.ParseUint(serial, 16, 64)
	return err == nil
}

func checkDS18B20(cfg *DeviceConfig) error {
	_, err := ds18b20Sensors(cfg.Sensors)
	return err
}

// ds18b20Device is a ds18b20 device.
type ds18b20Device struct {
	dir     string
	sensors []ds18b20Sensor // nil: every sensor found, at each read
	log     *slog.Logger

	mu         sync.Mutex
	found      []ds18b20Sensor // under mu: every sensor found since Open when none are configured
	readErrors atomic.Uint64
}

func openDS18B20(cfg DeviceConfig, env Env) (Device, error) {
	sensors, err := ds18b20Sensors(cfg.Sensors)
	if err != nil {
		return nil, err
	}
	d := &ds18b20Device{dir: DefaultOneWireDir, sensors: sensors, log: env.Logger}
	if env.Hardware != nil && env.Hardware.OneWireDir() != "" {
		d.dir = env.Hardware.OneWireDir()
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if len(sensors) == 0 {
		// Nothing on the bus yet (w1-gpio not loaded, a sensor not wired) is
		// an error, which the Runner retries.
		if d.found, err = d.discover(); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// discover lists the temperature sensors the kernel sees.
func (d *ds18b20Device) discover() ([]ds18b20Sensor, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return nil, fmt.Errorf("ds18b20: 1-Wire bus: %w (is the w1-gpio overlay enabled?)", err)
	}
	var out []ds18b20Sensor
	for _, e := range ents {
		id := strings.ToLower(e.Name())
		if isW1TempID(id) {
			out = append(out, ds18b20Sensor{id: e.Name(), channel: id})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ds18b20: no temperature sensor in %s", d.dir)
	}
	return out, nil
}

func (d *ds18b20Device) current() []ds18b20Sensor {
	if d.sensors != nil {
		return d.sensors
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.found)
}

// addFound adds the sensors of found not seen before to the device's
// channels: a sensor that drops off the bus keeps its channel.
func (d *ds18b20Device) addFound(found []ds18b20Sensor) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range found {
		if !slices.Contains(d.found, s) {
			d.found = append(d.found, s)
		}
	}
}

func (d *ds18b20Device) Channels() []ChannelInfo {
	var out []ChannelInfo
	for _, s := range d.current() {
		out = append(out, ChannelInfo{Channel: s.channel, Unit: "°C", DeviceClass: "temperature", StateClass: "measurement", Component: ComponentSensor, Precision: 2})
	}
	return append(out, ChannelInfo{Channel: "read_errors", StateClass: "total_increasing", Component: ComponentSensor, Precision: 0})
}

func (d *ds18b20Device) Close() error { return nil }

// ReadErrors counts the sensor readings that failed since Open.
func (d *ds18b20Device) ReadErrors() uint64 { return d.readErrors.Load() }

// Read reads every sensor (the kernel converts on each read: about 750 ms a
// sensor). A sensor that fails is left out and counted; Read fails only when
// none could be read. Without configured sensors, the bus is listed again
// at each read, so a sensor added later is published too, and listed by
// Channels from then on.
func (d *ds18b20Device) Read(ctx context.Context) ([]Reading, error) {
	sensors := d.current()
	if d.sensors == nil {
		if found, err := d.discover(); err == nil {
			sensors = found
			d.addFound(found)
		}
	}
	var (
		out  []Reading
		errs []error
	)
	for _, s := range sensors {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c, err := readW1Slave(filepath.Join(d.dir, s.id, "w1_slave"))
		if err != nil {
			errs = append(errs, fmt.Errorf("ds18b20 %s: %w", s.id, err))
			continue
		}
		out = append(out, Reading{Channel: s.channel, Value: c, Unit: "°C", Time: time.Now()})
	}
	if len(errs) > 0 {
		d.readErrors.Add(uint64(len(errs)))
		for _, err := range errs {
			d.log.Warn("sensor not read", "err", err)
		}
	}
	if len(out) == 0 {
		if len(errs) == 0 {
			return nil, fmt.Errorf("ds18b20: no temperature sensor in %s", d.dir)
		}
		return nil, errors.Join(errs...)
	}
	return append(out, Reading{Channel: "read_errors", Value: float64(d.readErrors.Load()), Time: time.Now()}), nil
}

// readW1Slave reads a w1_slave file and returns degrees Celsius.
func readW1Slave(p string) (float64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return parseW1Slave(string(b))
}

// parseW1Slave parses the kernel's w1_slave text:
//
//	72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//	72 01 4b 46 7f ff 0e 10 57 t=23125
func parseW1Slave(s string) (float64, error) {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) < 2 {
		return 0, fmt.Errorf("w1_slave: %d lines, want 2: %q", len(lines), clip(s))
	}
	crcLine := strings.TrimSpace(lines[0])
	if !strings.Contains(crcLine, "crc=") {
		return 0, fmt.Errorf("w1_slave: no crc in %q", crcLine)
	}
	if !strings.HasSuffix(crcLine, "YES") {
		return 0, fmt.Errorf("%w: %q", errW1CRC, crcLine)
	}
	data, _, _ := strings.Cut(crcLine, ":")
	if allZero(strings.Fields(data)) {
		return 0, errW1Zero
	}
	_, t, ok := strings.Cut(lines[1], "t=")
	if !ok {
		return 0, fmt.Errorf("w1_slave: no t= in %q", lines[1])
	}
	milli, err := strconv.ParseInt(strings.TrimSpace(t), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("w1_slave: t=%q is not an integer", t)
	}
	if milli == 85000 {
		return 0, errW1PowerOn
	}
	if milli < -55000 || milli > 125000 {
		return 0, fmt.Errorf("w1_slave: %d m°C is outside the sensor's range", milli)
	}
	return float64(milli) / 1000, nil
}

func allZero(hexBytes []string) bool {
	if len(hexBytes) == 0 {
		return false
	}
	for _, h := range hexBytes {
		if h != "00" {
			return false
		}
	}
	return true
}
