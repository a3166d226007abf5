package board

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"go.bug.st/serial"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/host/v3"
	"periph.io/x/host/v3/gpioioctl"
	"periph.io/x/host/v3/sysfs"
)

// Board is the gateway's hardware: it implements the drivers' Hardware.
type Board struct {
	root string
	info Info

	hostOnce sync.Once
	hostErr  error

	mu    sync.Mutex
	buses map[int]i2c.BusCloser
	lines map[string]string // chip:line -> the name it was opened by
}

// New returns the board found under root ("/" on the gateway). Nothing is
// opened until a driver asks.
func New(root string) *Board {
	if root == "" {
		root = "/"
	}
	return &Board{root: root, info: Detect(root), buses: map[int]i2c.BusCloser{}, lines: map[string]string{}}
}

// Info returns what Detect found.
func (b *Board) Info() Info { return b.info }

// Root is the directory /dev, /proc and /sys are found under.
func (b *Board) Root() string { return b.root }

// OneWireDir is the kernel's 1-Wire devices directory.
func (b *Board) OneWireDir() string { return filepath.Join(b.root, "sys/bus/w1/devices") }

func (b *Board) path(p string) string { return filepath.Join(b.root, p) }

// initHost initialises periph's host drivers once, when the first GPIO line
// is opened: it opens every /dev/gpiochip*.
func (b *Board) initHost() error {
	b.hostOnce.Do(func() {
		if _, err := host.Init(); err != nil {
			b.hostErr = fmt.Errorf("board: periph host: %w", err)
		}
	})
	return b.hostErr
}

// I2C opens an I2C bus: by number ("1", "i2c-1", "/dev/i2c-1"), by adapter
// name (as in /sys/class/i2c-adapter/i2c-N/name), or "" for the default
// bus (1 on a Raspberry Pi, else the lowest-numbered). An adapter without
// plain I2C transfers is wrapped in SMBusFallback. Buses are shared between
// devices and stay open until Close.
func (b *Board) I2C(bus string) (i2c.Bus, error) {
	n, err := b.i2cNumber(bus)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.buses[n]; ok {
		return c, nil
	}
	c, err := openI2C(b.path("dev"), n)
	if err != nil {
		return nil, err
	}
	b.buses[n] = c
	return c, nil
}

// openI2C opens /dev/i2c-n: periph's i2c-dev bus when the adapter does plain
// I2C, else SMBusFallback.
func openI2C(dev string, n int) (i2c.BusCloser, error) {
	path := filepath.Join(dev, "i2c-"+strconv.Itoa(n))
	c, funcs, err := openI2CDev(path)
	if err != nil {
		return nil, fmt.Errorf("board: I2C bus %d: %w", n, err)
	}
	if funcs&i2cFuncI2C != 0 && dev == "/dev" {
		c.close()
		bus, err := sysfs.NewI2C(n)
		if err != nil {
			return nil, fmt.Errorf("board: I2C bus %d: %w", n, err)
		}
		return bus, nil
	}
	return &SMBusFallback{name: "i2c-" + strconv.Itoa(n), funcs: funcs, c: c}, nil
}

// I2CBuses lists the I2C buses: number and adapter name.
func (b *Board) I2CBuses() []I2CBus {
	var out []I2CBus
	ms, _ := filepath.Glob(b.path("dev/i2c-*"))
	for _, m := range ms {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(m), "i2c-"))
		if err != nil {
			continue
		}
		out = append(out, I2CBus{Number: n, Path: "/dev/i2c-" + strconv.Itoa(n), Name: b.adapterName(n)})
	}
	slices.SortFunc(out, func(a, c I2CBus) int { return a.Number - c.Number })
	return out
}

func (b *Board) adapterName(n int) string {
	for _, d := range []string{"sys/class/i2c-adapter", "sys/bus/i2c/devices"} {
		if s := readString(b.path(filepath.Join(d, "i2c-"+strconv.Itoa(n), "name"))); s != "" {
			return s
		}
	}
	return ""
}

func (b *Board) i2cNumber(bus string) (int, error) {
	s := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(bus), "/dev/"), "i2c-")
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return n, nil
	}
	buses := b.I2CBuses()
	if len(buses) == 0 {
		return 0, fmt.Errorf("board: no I2C bus (is i2c-dev loaded, and I2C enabled: dtparam=i2c_arm=on?)")
	}
	if bus == "" {
		if b.info.Family == FamilyRaspberryPi {
			for _, x := range buses {
				if x.Number == 1 {
					return 1, nil
				}
			}
		}
		return buses[0].Number, nil
	}
	for _, x := range buses {
		if strings.EqualFold(x.Name, bus) {
			return x.Number, nil
		}
	}
	var names []string
	for _, x := range buses {
		names = append(names, fmt.Sprintf("%d (%s)", x.Number, x.Name))
	}
	return 0, fmt.Errorf("board: no I2C bus %q; there are %s", bus, strings.Join(names, ", "))
}

// Pin opens a GPIO line by name (see ParsePin) through the GPIO character
// device. A line is opened by one name: the same name opens it again (the
// same line), another name for it is refused.
func (b *Board) Pin(name string) (gpio.PinIO, error) {
	ref, err := ParsePin(name, b.info.Header40)
	if err != nil {
		return nil, fmt.Errorf("board: %w", err)
	}
	if err := b.initHost(); err != nil {
		return nil, err
	}
	chips := periphChips()
	info, line, err := resolvePin(ref, chips)
	if err != nil {
		return nil, fmt.Errorf("board: %w", err)
	}
	key := info.Name + ":" + strconv.Itoa(line)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range gpioioctl.Chips {
		if c.Name() == info.Name {
			l := c.ByNumber(line)
			if l == nil {
				break
			}
			if err := b.claimLine(key, name); err != nil {
				return nil, err
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("board: pin %s: line %s not found", name, key)
}

// claimLine records that the line key (chip:line) is opened by the pin name
// name; b.mu is held. The same name may open its line again, as a device
// does when it retries after its setup failed (the line busy, say); another
// name for the same line (P1-11 after GPIO17) is refused.
func (b *Board) claimLine(key, name string) error {
	if by, ok := b.lines[key]; ok && by != name {
		return fmt.Errorf("board: pin %s is %s, already opened as %s", name, key, by)
	}
	b.lines[key] = name
	return nil
}

func periphChips() []ChipInfo {
	var out []ChipInfo
	for _, c := range gpioioctl.Chips {
		ci := ChipInfo{Name: c.Name(), Path: c.Path(), Label: c.Label(), Lines: c.LineCount()}
		for _, l := range c.Lines() {
			ci.Names = append(ci.Names, l.Name())
		}
		out = append(out, ci)
	}
	return out
}

// Serial opens a serial port, 8N1 at baud: a path (/dev/ttyUSB0) or a name
// under /dev (ttyAMA0, serial0).
func (b *Board) Serial(port string, baud int) (io.ReadWriteCloser, error) {
	p := port
	if !strings.HasPrefix(p, "/") {
		p = "/dev/" + p
	}
	p = b.path(p)
	if baud <= 0 {
		baud = 9600
	}
	sp, err := serial.Open(p, &serial.Mode{BaudRate: baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("board: serial %s: %w", port, err)
	}
	return sp, nil
}

// Close closes the I2C buses opened. GPIO lines belong to periph's chips
// and are released when the process ends.
func (b *Board) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var first error
	for n, c := range b.buses {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
		delete(b.buses, n)
	}
	return first
}
