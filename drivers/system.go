package drivers

// system: the gateway's own health, read from the kernel with no settings
// and no external program: CPU temperature, load, memory, disk usage of
// mount points, uptime, bytes through each network interface, and on a
// Raspberry Pi the firmware's throttling flags (under-voltage, throttled).
// Whatever this kernel does not offer (a container has no thermal zone, a
// PC no firmware flags) is left out rather than failing the device, so the
// built-in configuration works on any Linux.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gatewayd/config"
)

func init() {
	Register("system", openSystem)
	RegisterCheck("system", checkSystem)
}

// systemThrottledPath is the Raspberry Pi firmware's throttling flags, the
// value `vcgencmd get_throttled` prints, under Hardware.Root.
const systemThrottledPath = "sys/devices/platform/soc/soc:firmware/get_throttled"

// Throttling flag bits (Raspberry Pi firmware).
const (
	throttledUnderVoltage = 1 << 0
	throttledNow          = 1 << 2
)

// Thermal zone types that are the CPU, best first. Without one of them the
// first zone with a reading is used.
var cpuZoneTypes = []string{"cpu-thermal", "cpu_thermal", "x86_pkg_temp", "soc-thermal", "soc_thermal", "coretemp", "cpu"}

func checkSystem(cfg *DeviceConfig) error {
	var errs []error
	for i, m := range cfg.Mounts {
		if !filepath.IsAbs(m) {
			errs = append(errs, config.Errorf(fmt.Sprintf("mounts[%d]", i), "mount %q is not an absolute path", m))
		}
	}
	for i, n := range cfg.Interfaces {
		if err := checkChannelName(n); err != nil || strings.ContainsAny(n, " \t") {
			errs = append(errs, config.Errorf(fmt.Sprintf("interfaces[%d]", i), "interface name %q", n))
		}
	}
	return errors.Join(errs...)
}

// systemDevice is a system device.
type systemDevice struct {
	root       string
	thermal    string            // the CPU's thermal zone temp file; "" when none
	throttled  string            // the firmware flags file; "" when not a Pi
	mounts     map[string]string // channel suffix -> mount point
	mountOrder []string
	ifaces     []string // configured interfaces; nil: every one but lo, found at each read
}

func openSystem(cfg DeviceConfig, env Env) (Device, error) {
	if err := checkSystem(&cfg); err != nil {
		return nil, err
	}
	d := &systemDevice{root: "/", mounts: map[string]string{}, ifaces: cfg.Interfaces}
	if env.Hardware != nil && env.Hardware.Root() != "" {
		d.root = env.Hardware.Root()
	}
	d.thermal = d.findThermalZone()
	if p := d.path(systemThrottledPath); fileReadable(p) {
		d.throttled = p
	}
	mounts := cfg.Mounts
	if len(mounts) == 0 {
		mounts = []string{"/"}
	}
	for _, m := range mounts {
		name := mountChannel(m)
		if prev, dup := d.mounts[name]; dup {
			return nil, config.Errorf("mounts", "mounts %q and %q give the same channel name %q", prev, m, name)
		}
		d.mounts[name] = m
		d.mountOrder = append(d.mountOrder, name)
	}
	return d, nil
}

func (d *systemDevice) path(rel string) string { return filepath.Join(d.root, rel) }

func fileReadable(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// findThermalZone returns the temp file of the CPU's thermal zone, or of
// the first zone that reads, or "".
func (d *systemDevice) findThermalZone() string {
	zones, _ := filepath.Glob(d.path("sys/class/thermal/thermal_zone*"))
	slices.SortFunc(zones, func(a, b string) int { return zoneNumber(a) - zoneNumber(b) })
	best, bestRank := "", len(cpuZoneTypes)+1
	for _, z := range zones {
		temp := filepath.Join(z, "temp")
		if _, err := readMilli(temp); err != nil {
			continue
		}
		typ, _ := os.ReadFile(filepath.Join(z, "type"))
		rank := len(cpuZoneTypes)
		if i := slices.Index(cpuZoneTypes, strings.TrimSpace(string(typ))); i >= 0 {
			rank = i
		}
		if rank < bestRank {
			best, bestRank = temp, rank
		}
	}
	return best
}

func zoneNumber(p string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), "thermal_zone"))
	return n
}

var nonChannelChars = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// mountChannel names a mount point's channels: "/" is root, "/var/log" is
// var_log.
func mountChannel(m string) string {
	m = strings.Trim(filepath.Clean(m), "/")
	if m == "" {
		return "root"
	}
	return nonChannelChars.ReplaceAllString(m, "_")
}

func (d *systemDevice) Channels() []ChannelInfo {
	s := func(ch, unit, class, state string, prec int) ChannelInfo {
		return ChannelInfo{Channel: ch, Unit: unit, DeviceClass: class, StateClass: state, Component: ComponentSensor, Precision: prec}
	}
	out := []ChannelInfo{
		s("load_1", "", "", "measurement", 2),
		s("load_5", "", "", "measurement", 2),
		s("load_15", "", "", "measurement", 2),
		s("memory_used", "%", "", "measurement", 1),
		s("memory_available", "MiB", "data_size", "measurement", 0),
		s("uptime", "s", "duration", "total_increasing", 0),
	}
	if d.thermal != "" {
		out = append(out, s("cpu_temperature", "°C", "temperature", "measurement", 1))
	}
	for _, name := range d.mountOrder {
		out = append(out,
			s("disk_used_"+name, "%", "", "measurement", 1),
			s("disk_free_"+name, "GiB", "data_size", "measurement", 2))
	}
	ifaces := d.ifaces
	if ifaces == nil {
		stats, _ := d.netDev()
		for _, st := range stats {
			ifaces = append(ifaces, st.name)
		}
	}
	for _, n := range ifaces {
		out = append(out,
			s("net_rx_"+n, "B", "data_size", "total_increasing", 0),
			s("net_tx_"+n, "B", "data_size", "total_increasing", 0))
	}
	if d.throttled != "" {
		out = append(out,
			s("throttled", "", "", "", 0),
			ChannelInfo{Channel: "under_voltage", DeviceClass: "problem", Component: ComponentBinarySensor, Precision: -1},
			ChannelInfo{Channel: "throttling", DeviceClass: "problem", Component: ComponentBinarySensor, Precision: -1})
	}
	return out
}

func (d *systemDevice) Close() error { return nil }

// Read reads every source; one that fails is left out of this read and
// the others still published. Read fails only when nothing could be read.
func (d *systemDevice) Read(ctx context.Context) ([]Reading, error) {
	now := time.Now()
	var (
		out  []Reading
		errs []error
	)
	add := func(ch string, v float64, unit string) {
		out = append(out, Reading{Channel: ch, Value: v, Unit: unit, Time: now})
	}
	if l, err := d.loadavg(); err != nil {
		errs = append(errs, err)
	} else {
		add("load_1", l[0], "")
		add("load_5", l[1], "")
		add("load_15", l[2], "")
	}
	if total, avail, err := d.meminfo(); err != nil {
		errs = append(errs, err)
	} else {
		add("memory_used", 100*float64(total-avail)/float64(total), "%")
		add("memory_available", float64(avail)/(1<<20), "MiB")
	}
	if up, err := d.uptime(); err != nil {
		errs = append(errs, err)
	} else {
		add("uptime", up, "s")
	}
	if d.thermal != "" {
		if t, err := readMilli(d.thermal); err != nil {
			errs = append(errs, err)
		} else {
			add("cpu_temperature", t, "°C")
		}
	}
	for _, name := range d.mountOrder {
		used, free, err := diskUsage(d.mounts[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		add("disk_used_"+name, used, "%")
		add("disk_free_"+name, free, "GiB")
	}
	if stats, err := d.netDev(); err != nil {
		errs = append(errs, err)
	} else {
		for _, st := range stats {
			if d.ifaces != nil && !slices.Contains(d.ifaces, st.name) {
				continue
			}
			add("net_rx_"+st.name, float64(st.rx), "B")
			add("net_tx_"+st.name, float64(st.tx), "B")
		}
	}
	if d.throttled != "" {
		if flags, err := readThrottled(d.throttled); err != nil {
			errs = append(errs, err)
		} else {
			add("throttled", float64(flags), "")
			out = append(out,
				Reading{Channel: "under_voltage", Text: onOffText(flags&throttledUnderVoltage != 0), IsText: true, Retain: true, Time: now},
				Reading{Channel: "throttling", Text: onOffText(flags&throttledNow != 0), IsText: true, Retain: true, Time: now})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("system: nothing could be read: %w", errors.Join(errs...))
	}
	return out, nil
}

func onOffText(on bool) string {
	if on {
		return "ON"
	}
	return "OFF"
}

// readMilli reads a sysfs value in thousandths (millidegrees) as units.
func readMilli(p string) (float64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not an integer", p, bytes.TrimSpace(b))
	}
	return float64(v) / 1000, nil
}

func readThrottled(p string) (uint64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	s := strings.TrimPrefix(strings.TrimSpace(string(b)), "throttled=")
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a hexadecimal value", p, s)
	}
	return v, nil
}

func (d *systemDevice) loadavg() ([3]float64, error) {
	var l [3]float64
	p := d.path("proc/loadavg")
	b, err := os.ReadFile(p)
	if err != nil {
		return l, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return l, fmt.Errorf("%s: %q", p, b)
	}
	for i := range l {
		if l[i], err = strconv.ParseFloat(f[i], 64); err != nil {
			return l, fmt.Errorf("%s: %q", p, b)
		}
	}
	return l, nil
}

// meminfo returns MemTotal and MemAvailable in bytes.
func (d *systemDevice) meminfo() (total, avail uint64, err error) {
	p := d.path("proc/meminfo")
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var haveTotal, haveAvail bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "MemTotal" && key != "MemAvailable") {
			continue
		}
		fs := strings.Fields(rest)
		if len(fs) == 0 {
			continue
		}
		kb, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %s: %q", p, key, rest)
		}
		if key == "MemTotal" {
			total, haveTotal = kb*1024, true
		} else {
			avail, haveAvail = kb*1024, true
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !haveTotal || !haveAvail || total == 0 || avail > total {
		return 0, 0, fmt.Errorf("%s: no usable MemTotal and MemAvailable (kernel before 3.14?)", p)
	}
	return total, avail, nil
}

func (d *systemDevice) uptime() (float64, error) {
	p := d.path("proc/uptime")
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty", p)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %q", p, b)
	}
	return v, nil
}

// diskUsage returns the used percentage (of what an unprivileged user may
// use, as df shows it) and the space free to such a user, in GiB.
func diskUsage(mount string) (usedPct, freeGiB float64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(mount, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", mount, err)
	}
	bs := float64(st.Bsize)
	total := float64(st.Blocks) * bs
	free := float64(st.Bfree) * bs
	avail := float64(st.Bavail) * bs
	used := total - free
	if used+avail <= 0 {
		return 0, 0, fmt.Errorf("statfs %s: no blocks", mount)
	}
	return 100 * used / (used + avail), avail / (1 << 30), nil
}

type netStat struct {
	name   string
	rx, tx uint64
}

// netDev reads /proc/net/dev: every interface but lo.
func (d *systemDevice) netDev() ([]netStat, error) {
	p := d.path("proc/net/dev")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	var out []netStat
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue // the two header lines
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if len(f) < 9 {
			return nil, fmt.Errorf("%s: %q", p, line)
		}
		rx, err1 := strconv.ParseUint(f[0], 10, 64)
		tx, err2 := strconv.ParseUint(f[8], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: %q", p, line)
		}
		if d.ifaces == nil && name == "lo" {
			continue
		}
		if checkChannelName(name) != nil {
			continue
		}
		out = append(out, netStat{name: name, rx: rx, tx: tx})
	}
	return out, nil
}
