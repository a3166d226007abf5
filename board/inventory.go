package board

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Inventory is what is attached to the board, for `gatewayctl hw`.
type Inventory struct {
	Board    Info
	GPIO     []GPIOChip
	I2C      []I2CBus
	OneWire  []OneWireDevice
	Serial   []SerialPort
	Problems []string // what could not be read
}

// GPIOChip is one GPIO character device.
type GPIOChip struct {
	Path  string // /dev/gpiochip0
	Name  string // gpiochip0
	Label string // pinctrl-bcm2711; empty when the chip could not be queried
	Lines int
}

// I2CBus is one i2c-dev bus.
type I2CBus struct {
	Number int
	Path   string // /dev/i2c-1
	Name   string // adapter name: bcm2835 (i2c@7e804000), SMBus I801 adapter at efa0, ...
}

// OneWireDevice is one device on the kernel's 1-Wire bus.
type OneWireDevice struct {
	ID     string // 28-0316a2795aff
	Family string // the family code, "28"
	Kind   string // DS18B20, ... when the family is known
}

// SerialPort is one serial device.
type SerialPort struct {
	Path   string // /dev/ttyAMA0, /dev/serial0
	Target string // for a symlink (serial0), what it points at
}

var oneWireFamilies = map[string]string{
	"10": "DS18S20", "22": "DS1822", "28": "DS18B20", "3b": "MAX31850", "42": "DS28EA00",
	"26": "DS2438", "29": "DS2408", "3a": "DS2413", "1d": "DS2423", "12": "DS2406",
}

// Inventory lists the GPIO chips, I2C buses, 1-Wire devices and serial
// ports under the board's root. It does not open any device for I/O (GPIO
// chips are queried for their label).
func (b *Board) Inventory() Inventory {
	inv := Inventory{Board: b.info}
	chips, _ := filepath.Glob(b.path("dev/gpiochip*"))
	slices.SortFunc(chips, byNumberSuffix)
	seen := map[string]bool{}
	for _, c := range chips {
		g := GPIOChip{Path: "/dev/" + filepath.Base(c), Name: filepath.Base(c)}
		if name, label, lines, err := gpioChipInfo(c); err == nil {
			g.Name, g.Label, g.Lines = cmpOr(name, g.Name), label, lines
		} else {
			inv.Problems = append(inv.Problems, fmt.Sprintf("%s: %v", g.Path, err))
		}
		if seen[g.Name] {
			continue // a compatibility link (gpiochip4 -> gpiochip0 on older Pi 5 kernels)
		}
		seen[g.Name] = true
		inv.GPIO = append(inv.GPIO, g)
	}
	inv.I2C = b.I2CBuses()
	ents, err := os.ReadDir(b.OneWireDir())
	if err == nil {
		for _, e := range ents {
			id := e.Name()
			fam, _, ok := strings.Cut(id, "-")
			if !ok || strings.HasPrefix(id, "w1_bus_master") {
				continue
			}
			inv.OneWire = append(inv.OneWire, OneWireDevice{ID: id, Family: fam, Kind: oneWireFamilies[strings.ToLower(fam)]})
		}
	} else if !os.IsNotExist(err) {
		inv.Problems = append(inv.Problems, err.Error())
	}
	for _, pat := range []string{"serial[0-9]*", "ttyAMA*", "ttyS*", "ttyUSB*", "ttyACM*"} {
		ms, _ := filepath.Glob(b.path("dev/" + pat))
		slices.SortFunc(ms, byNumberSuffix)
		for _, m := range ms {
			p := SerialPort{Path: "/dev/" + filepath.Base(m)}
			if t, err := os.Readlink(m); err == nil {
				p.Target = t
			}
			inv.Serial = append(inv.Serial, p)
		}
	}
	return inv
}

// byNumberSuffix orders ttyS2 before ttyS10.
func byNumberSuffix(a, b string) int {
	pa, na := splitNumber(filepath.Base(a))
	pb, nb := splitNumber(filepath.Base(b))
	if c := strings.Compare(pa, pb); c != 0 {
		return c
	}
	return na - nb
}

func splitNumber(s string) (string, int) {
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	n, _ := strconv.Atoi(s[i:])
	return s[:i], n
}

// WriteText writes the inventory for a person to read.
func (inv Inventory) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Board:\t%s\n", inv.Board.Model)
	if inv.Board.Vendor != "" {
		fmt.Fprintf(tw, "Vendor:\t%s\n", inv.Board.Vendor)
	}
	if inv.Board.Serial != "" {
		fmt.Fprintf(tw, "Serial:\t%s\n", inv.Board.Serial)
	}
	if inv.Board.Header40 {
		fmt.Fprintf(tw, "Header:\t40-pin (P1-<n> pin names)\n")
	}
	fmt.Fprintf(tw, "\nGPIO chips:\n")
	if len(inv.GPIO) == 0 {
		fmt.Fprintf(tw, "  none\n")
	}
	for _, g := range inv.GPIO {
		fmt.Fprintf(tw, "  %s\t%s\t%d lines\n", g.Path, cmpOr(g.Label, "?"), g.Lines)
	}
	fmt.Fprintf(tw, "\nI2C buses:\n")
	if len(inv.I2C) == 0 {
		fmt.Fprintf(tw, "  none\n")
	}
	for _, b := range inv.I2C {
		fmt.Fprintf(tw, "  %s\tbus %d\t%s\n", b.Path, b.Number, b.Name)
	}
	fmt.Fprintf(tw, "\n1-Wire devices:\n")
	if len(inv.OneWire) == 0 {
		fmt.Fprintf(tw, "  none\n")
	}
	for _, d := range inv.OneWire {
		fmt.Fprintf(tw, "  %s\t%s\n", d.ID, cmpOr(d.Kind, "family "+d.Family))
	}
	fmt.Fprintf(tw, "\nSerial ports:\n")
	if len(inv.Serial) == 0 {
		fmt.Fprintf(tw, "  none\n")
	}
	for _, s := range inv.Serial {
		if s.Target != "" {
			fmt.Fprintf(tw, "  %s\t-> %s\n", s.Path, s.Target)
		} else {
			fmt.Fprintf(tw, "  %s\t\n", s.Path)
		}
	}
	if len(inv.Problems) > 0 {
		fmt.Fprintf(tw, "\nNot read:\n")
		for _, p := range inv.Problems {
			fmt.Fprintf(tw, "  %s\n", p)
		}
	}
	return tw.Flush()
}
