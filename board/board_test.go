package board

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gatewayd/drivers"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/mcp9808"
)

var _ drivers.Hardware = (*Board)(nil)

// fakeTree writes files (path -> content) under a temp dir; a content
// starting with "->" makes a symlink.
func fakeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestDetect(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  Info
	}{
		{"Raspberry Pi 4", map[string]string{
			"proc/device-tree/model":         "Raspberry Pi 4 Model B Rev 1.4\x00",
			"proc/device-tree/serial-number": "10000000abcdef01\x00",
		}, Info{Family: FamilyRaspberryPi, Model: "Raspberry Pi 4 Model B Rev 1.4", Serial: "10000000abcdef01", Header40: true}},
		{"Raspberry Pi 5", map[string]string{
			"proc/device-tree/model":         "Raspberry Pi 5 Model B Rev 1.0\x00",
			"proc/device-tree/serial-number": "d2a3c4e5f6a7b8c9\x00",
		}, Info{Family: FamilyRaspberryPi, Model: "Raspberry Pi 5 Model B Rev 1.0", Serial: "d2a3c4e5f6a7b8c9", Header40: true}},
		{"Raspberry Pi Zero 2 W", map[string]string{
			"proc/device-tree/model":         "Raspberry Pi Zero 2 W Rev 1.0\x00",
			"proc/device-tree/serial-number": "00000000e1f2a3b4\x00",
		}, Info{Family: FamilyRaspberryPi, Model: "Raspberry Pi Zero 2 W Rev 1.0", Serial: "00000000e1f2a3b4", Header40: true}},
		{"Raspberry Pi 3 B+", map[string]string{
			"proc/device-tree/model": "Raspberry Pi 3 Model B Plus Rev 1.3\x00",
		}, Info{Family: FamilyRaspberryPi, Model: "Raspberry Pi 3 Model B Plus Rev 1.3", Header40: true}},
		{"Compute Module 4 (no header)", map[string]string{
			"proc/device-tree/model":         "Raspberry Pi Compute Module 4 Rev 1.0\x00",
			"proc/device-tree/serial-number": "100000001234abcd\x00",
		}, Info{Family: FamilyRaspberryPi, Model: "Raspberry Pi Compute Module 4 Rev 1.0", Serial: "100000001234abcd"}},
		{"Compute Module 5 through /sys/firmware", map[string]string{
			"sys/firmware/devicetree/base/model":         "Raspberry Pi Compute Module 5 Rev 1.0\x00",
			"sys/firmware/devicetree/base/serial-number": "abcdef0123456789\x00",
		}, Info{Family: FamilyRaspberryPi, Model: "Raspberry Pi Compute Module 5 Rev 1.0", Serial: "abcdef0123456789"}},
		{"generic device-tree board", map[string]string{
			"proc/device-tree/model": "Pine64 RockPro64 v2.1\x00",
		}, Info{Family: FamilyDeviceTree, Model: "Pine64 RockPro64 v2.1"}},
		{"x86 with DMI", map[string]string{
			"sys/class/dmi/id/product_name":   "NUC7CJYH\n",
			"sys/class/dmi/id/board_vendor":   "Intel Corporation\n",
			"sys/class/dmi/id/product_serial": "G6JY12345678\n",
		}, Info{Family: FamilyX86, Model: "NUC7CJYH", Vendor: "Intel Corporation", Serial: "G6JY12345678"}},
		{"x86, serial readable by root only", map[string]string{
			"sys/class/dmi/id/product_name": "Standard PC (i440FX + PIIX, 1996)\n",
			"sys/class/dmi/id/sys_vendor":   "QEMU\n",
		}, Info{Family: FamilyX86, Model: "Standard PC (i440FX + PIIX, 1996)", Vendor: "QEMU"}},
		{"nothing to go by", map[string]string{"etc/hostname": "gw\n"}, Info{Family: FamilyUnknown, Model: "unknown"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Detect(fakeTree(t, c.files)); got != c.want {
				t.Errorf("Detect = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestDetectUnreadableDMISerial(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads a mode 000 file")
	}
	root := fakeTree(t, map[string]string{"sys/class/dmi/id/product_name": "PC\n", "sys/class/dmi/id/product_serial": "secret\n"})
	os.Chmod(filepath.Join(root, "sys/class/dmi/id/product_serial"), 0)
	if got := Detect(root); got.Serial != "" || got.Model != "PC" {
		t.Errorf("Detect = %+v", got)
	}
}

func TestParsePin(t *testing.T) {
	good := []struct {
		in   string
		want PinRef
	}{
		{"GPIO17", PinRef{GPIO: 17}},
		{"gpio4", PinRef{GPIO: 4}},
		{"BCM27", PinRef{GPIO: 27}},
		{"P1-11", PinRef{GPIO: 17, Header: 11}},
		{"p1-3", PinRef{GPIO: 2, Header: 3}},
		{"P1_40", PinRef{GPIO: 21, Header: 40}},
		{"PIN27", PinRef{GPIO: 0, Header: 27}},
		{"gpiochip0:17", PinRef{GPIO: -1, Chip: "gpiochip0", Line: 17}},
		{"pinctrl-rp1:4", PinRef{GPIO: -1, Chip: "pinctrl-rp1", Line: 4}},
	}
	for _, c := range good {
		got, err := ParsePin(c.in, true)
		if err != nil || got != c.want {
			t.Errorf("ParsePin(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []struct {
		in, why string
		header  bool
	}{
		{"P1-1", "3.3 V power", true},
		{"P1-2", "5 V power", true},
		{"P1-6", "ground", true},
		{"P1-41", "P1-1 to P1-40", true},
		{"P1-11", "no Raspberry Pi 40-pin header", false},
		{"GPIOx", "want GPIO<n>", true},
		{"17", "want GPIO<n>", true},
		{"gpiochip0:", "chip:line", true},
		{":3", "chip:line", true},
		{"gpiochip0:-1", "chip:line", true},
	}
	for _, c := range bad {
		_, err := ParsePin(c.in, c.header)
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("ParsePin(%q, %v) = %v, want an error saying %q", c.in, c.header, err, c.why)
		}
	}
}

func TestHeaderMapIsTheRaspberryPiPinout(t *testing.T) {
	// pinout.xyz: every header position is a GPIO, power or ground, and the
	// 28 GPIOs 0-27 each appear once.
	seen := map[int]bool{}
	for pos := 1; pos <= 40; pos++ {
		g, isGPIO := header40[pos]
		if isGPIO == (headerPower(pos) != "") {
			t.Errorf("P1-%d is both or neither GPIO and power", pos)
		}
		if isGPIO {
			if seen[g] {
				t.Errorf("GPIO%d appears twice", g)
			}
			seen[g] = true
		}
	}
	if len(seen) != 28 {
		t.Errorf("%d GPIOs on the header, want 28", len(seen))
	}
}

func names(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestResolvePin(t *testing.T) {
	pi5 := []ChipInfo{
		{Name: "gpiochip0", Label: "pinctrl-rp1", Lines: 54, Names: names("GPIO", 54)},
		{Name: "gpiochip10", Label: "gpio-brcmstb@107d508500", Lines: 32, Names: append([]string{"GPIO17"}, make([]string, 31)...)},
	}
	// The expander first in the list: the pin controller still wins.
	order := []ChipInfo{pi5[1], pi5[0]}
	c, line, err := resolvePin(PinRef{GPIO: 17}, order)
	if err != nil || c.Name != "gpiochip0" || line != 17 {
		t.Errorf("GPIO17 on a Pi 5 = %s:%d, %v", c.Name, line, err)
	}
	c, line, err = resolvePin(PinRef{GPIO: -1, Chip: "gpiochip10", Line: 3}, order)
	if err != nil || c.Name != "gpiochip10" || line != 3 {
		t.Errorf("gpiochip10:3 = %s:%d, %v", c.Name, line, err)
	}
	c, line, err = resolvePin(PinRef{GPIO: -1, Chip: "pinctrl-rp1", Line: 4}, order)
	if err != nil || c.Name != "gpiochip0" || line != 4 {
		t.Errorf("pinctrl-rp1:4 = %s:%d, %v", c.Name, line, err)
	}
	if _, _, err := resolvePin(PinRef{GPIO: -1, Chip: "gpiochip0", Line: 54}, order); err == nil {
		t.Error("a line past the chip's end was accepted")
	}
	if _, _, err := resolvePin(PinRef{GPIO: -1, Chip: "gpiochip7", Line: 1}, order); err == nil {
		t.Error("a missing chip was accepted")
	}
	// A pin controller whose lines have no names: GPIO<n> is line n.
	unnamed := []ChipInfo{{Name: "gpiochip0", Label: "pinctrl-bcm2835", Lines: 54, Names: make([]string, 54)}}
	c, line, err = resolvePin(PinRef{GPIO: 22}, unnamed)
	if err != nil || line != 22 {
		t.Errorf("GPIO22 on unnamed lines = %s:%d, %v", c.Name, line, err)
	}
	// A board with no such line name and no pin controller: ask for chip:line.
	other := []ChipInfo{{Name: "gpiochip0", Label: "gpio-sim.0-node0", Lines: 8, Names: make([]string, 8)}}
	if _, _, err := resolvePin(PinRef{GPIO: 3}, other); err == nil || !strings.Contains(err.Error(), "chip:line") {
		t.Errorf("GPIO3 on a board without names: %v", err)
	}
}

func TestInventoryOfAFakeRaspberryPi(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"proc/device-tree/model":              "Raspberry Pi 4 Model B Rev 1.4\x00",
		"proc/device-tree/serial-number":      "10000000abcdef01\x00",
		"dev/gpiochip0":                       "",
		"dev/gpiochip1":                       "",
		"dev/i2c-1":                           "",
		"dev/i2c-20":                          "",
		"dev/i2c-3":                           "",
		"sys/class/i2c-adapter/i2c-1/name":    "bcm2835 (i2c@7e804000)\n",
		"sys/class/i2c-adapter/i2c-20/name":   "fef04500.i2c\n",
		"sys/bus/w1/devices/28-0316a2795aff/": "",
		"sys/bus/w1/devices/10-000802b4a3c1/": "",
		"sys/bus/w1/devices/w1_bus_master1/":  "",
		"dev/ttyAMA0":                         "",
		"dev/ttyS0":                           "",
		"dev/ttyUSB0":                         "",
		"dev/ttyUSB10":                        "",
		"dev/ttyUSB2":                         "",
		"dev/ttyACM0":                         "",
		"dev/serial0":                         "->ttyS0",
		"dev/serial1":                         "->ttyAMA0",
	})
	b := New(root)
	inv := b.Inventory()
	if inv.Board.Model != "Raspberry Pi 4 Model B Rev 1.4" {
		t.Errorf("board %+v", inv.Board)
	}
	if len(inv.GPIO) != 2 || inv.GPIO[0].Path != "/dev/gpiochip0" || inv.GPIO[1].Name != "gpiochip1" {
		t.Errorf("GPIO %+v", inv.GPIO)
	}
	wantI2C := []I2CBus{{1, "/dev/i2c-1", "bcm2835 (i2c@7e804000)"}, {3, "/dev/i2c-3", ""}, {20, "/dev/i2c-20", "fef04500.i2c"}}
	if fmt.Sprint(inv.I2C) != fmt.Sprint(wantI2C) {
		t.Errorf("I2C %+v, want %+v", inv.I2C, wantI2C)
	}
	wantW1 := []OneWireDevice{{"10-000802b4a3c1", "10", "DS18S20"}, {"28-0316a2795aff", "28", "DS18B20"}}
	if fmt.Sprint(inv.OneWire) != fmt.Sprint(wantW1) {
		t.Errorf("1-Wire %+v, want %+v", inv.OneWire, wantW1)
	}
	var ser []string
	for _, s := range inv.Serial {
		ser = append(ser, s.Path+">"+s.Target)
	}
	want := "/dev/serial0>ttyS0 /dev/serial1>ttyAMA0 /dev/ttyAMA0> /dev/ttyS0> /dev/ttyUSB0> /dev/ttyUSB2> /dev/ttyUSB10> /dev/ttyACM0>"
	if got := strings.Join(ser, " "); got != want {
		t.Errorf("serial %s\nwant   %s", got, want)
	}
	var out bytes.Buffer
	if err := inv.WriteText(&out); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"Raspberry Pi 4 Model B Rev 1.4", "10000000abcdef01", "40-pin", "/dev/gpiochip0", "bus 1", "bcm2835 (i2c@7e804000)",
		"28-0316a2795aff", "DS18B20", "/dev/serial0", "-> ttyS0", "/dev/ttyACM0"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("text lacks %q:\n%s", s, out.String())
		}
	}
	if b.OneWireDir() != filepath.Join(root, "sys/bus/w1/devices") || b.Root() != root {
		t.Errorf("OneWireDir %s, Root %s", b.OneWireDir(), b.Root())
	}
}

func TestI2CBusByNumberNameAndDefault(t *testing.T) {
	root := fakeTree(t, map[string]string{
		"proc/device-tree/model":            "Raspberry Pi 5 Model B Rev 1.0\x00",
		"dev/i2c-1":                         "",
		"dev/i2c-13":                        "",
		"sys/class/i2c-adapter/i2c-1/name":  "Synopsys DesignWare I2C adapter\n",
		"sys/class/i2c-adapter/i2c-13/name": "107d508200.i2c\n",
	})
	b := New(root)
	for in, want := range map[string]int{"": 1, "1": 1, "i2c-13": 13, "/dev/i2c-13": 13, "107d508200.i2c": 13, "synopsys designware i2c adapter": 1} {
		if got, err := b.i2cNumber(in); err != nil || got != want {
			t.Errorf("i2cNumber(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := b.i2cNumber("nope"); err == nil || !strings.Contains(err.Error(), "13 (107d508200.i2c)") {
		t.Errorf("unknown bus: %v", err)
	}
	// Not an i2c-dev device: opening fails with the bus named.
	if _, err := b.I2C("1"); err == nil || !strings.Contains(err.Error(), "I2C bus 1") {
		t.Errorf("I2C(1) on a regular file: %v", err)
	}
	generic := New(fakeTree(t, map[string]string{"dev/i2c-7": "", "dev/i2c-2": ""}))
	if got, err := generic.i2cNumber(""); err != nil || got != 2 {
		t.Errorf("default bus on a PC = %d, %v; want the lowest, 2", got, err)
	}
}

// stub is an SMBus-only adapter like the kernel's i2c-stub: a 256-byte
// register file per address, and the transfers it was asked for.
type stub struct {
	funcs uint64
	regs  map[uint16]*[256]byte
	addr  uint16
	ptr   byte // the register pointer a send byte sets
	log   []string
}

func newStub(funcs uint64) *stub { return &stub{funcs: funcs, regs: map[uint16]*[256]byte{}} }

func (s *stub) chip(a uint16) *[256]byte {
	if s.regs[a] == nil {
		s.regs[a] = new([256]byte)
	}
	return s.regs[a]
}

func (s *stub) setAddr(a uint16) error { s.addr = a; return nil }
func (s *stub) close() error           { return nil }
func (s *stub) xfer(rw, cmd uint8, size uint32, d *smbusData) error {
	r := s.chip(s.addr)
	op := map[uint32]string{smbusQuick: "quick", smbusByte: "byte", smbusByteData: "byte-data", smbusWordData: "word-data", smbusI2CBlockData: "i2c-block"}[size]
	dir := map[uint8]string{smbusRead: "read", smbusWrite: "write"}[rw]
	s.log = append(s.log, fmt.Sprintf("%s %s %#02x", dir, op, cmd))
	switch {
	case size == smbusQuick:
	case size == smbusByte && rw == smbusWrite:
		s.ptr = cmd
	case size == smbusByte && rw == smbusRead:
		d[0] = r[s.ptr]
		s.ptr++
	case size == smbusByteData && rw == smbusWrite:
		r[cmd] = d[0]
	case size == smbusByteData && rw == smbusRead:
		d[0] = r[cmd]
	case size == smbusWordData && rw == smbusWrite:
		r[cmd], r[cmd+1] = d[0], d[1]
	case size == smbusI2CBlockData && rw == smbusWrite:
		copy(r[cmd:], d[1:1+d[0]])
	case size == smbusI2CBlockData && rw == smbusRead:
		copy(d[1:1+d[0]], r[cmd:])
	default:
		return errors.New("stub: unsupported")
	}
	return nil
}

const stubFuncs = i2cFuncSMBusQuick | i2cFuncSMBusReadByte | i2cFuncSMBusWriteByte | i2cFuncSMBusReadByteData |
	i2cFuncSMBusWriteByteDat | i2cFuncSMBusWriteWord | i2cFuncSMBusReadI2CBlock | i2cFuncSMBusWriteI2CBlk

func TestSMBusFallbackMapsRegisterTransfers(t *testing.T) {
	s := newStub(stubFuncs)
	bus := &SMBusFallback{name: "i2c-0", funcs: stubFuncs, c: s}
	d := &i2c.Dev{Bus: bus, Addr: 0x50}
	steps := []struct {
		w, r []byte
		log  string
	}{
		{[]byte{0x10, 0xAB}, nil, "write byte-data 0x10"},
		{[]byte{0x20, 0x12, 0x34}, nil, "write word-data 0x20"},
		{[]byte{0x30, 1, 2, 3, 4, 5}, nil, "write i2c-block 0x30"},
		{[]byte{0x10}, make([]byte, 1), "read byte-data 0x10"},
		{[]byte{0x20}, make([]byte, 2), "read i2c-block 0x20"},
		{[]byte{0x30}, make([]byte, 5), "read i2c-block 0x30"},
		{[]byte{0x30}, nil, "write byte 0x30"},
		{nil, make([]byte, 1), "read byte 0x00"},
	}
	for _, st := range steps {
		if err := d.Tx(st.w, st.r); err != nil {
			t.Fatalf("Tx(% x, %d): %v", st.w, len(st.r), err)
		}
		if got := s.log[len(s.log)-1]; got != st.log {
			t.Errorf("Tx(% x, %d) was %q, want %q", st.w, len(st.r), got, st.log)
		}
	}
	if steps[3].r[0] != 0xAB || !bytes.Equal(steps[4].r, []byte{0x12, 0x34}) || !bytes.Equal(steps[5].r, []byte{1, 2, 3, 4, 5}) || steps[7].r[0] != 1 {
		t.Errorf("read back % x, % x, % x, % x", steps[3].r, steps[4].r, steps[5].r, steps[7].r)
	}
	// what SMBus cannot express
	for _, c := range []struct{ w, r []byte }{
		{nil, make([]byte, 6)},                // a raw read of several bytes
		{[]byte{0x00, 0x10}, make([]byte, 2)}, // a 16-bit register address
		{[]byte{0x00}, make([]byte, 33)},      // more than a block
		{append([]byte{0}, make([]byte, 33)...), nil},
	} {
		if err := d.Tx(c.w, c.r); !errors.Is(err, ErrNotSMBus) {
			t.Errorf("Tx(%d bytes, %d bytes) = %v, want ErrNotSMBus", len(c.w), len(c.r), err)
		}
	}
}

func TestSMBusFallbackWithoutBlockSupportSaysSo(t *testing.T) {
	funcs := uint64(i2cFuncSMBusReadByteData | i2cFuncSMBusWriteByteDat)
	bus := &SMBusFallback{name: "i2c-9", funcs: funcs, c: newStub(funcs)}
	err := bus.Tx(0x50, []byte{0x00}, make([]byte, 4))
	if err == nil || !strings.Contains(err.Error(), "I2C block read") || !strings.Contains(err.Error(), "i2c-9") {
		t.Errorf("block read on an adapter without it: %v", err)
	}
}

// A periph driver runs unchanged on an SMBus-only adapter: the MCP9808's
// register writes and 16-bit register reads become SMBus transfers.
func TestPeriphDriverOverSMBusFallback(t *testing.T) {
	s := newStub(stubFuncs)
	regs := s.chip(0x18)
	regs[0x05], regs[0x06] = 0xC1, 0x94 // ambient temperature: 25.25 °C with alert flags
	bus := &SMBusFallback{name: "i2c-0", funcs: stubFuncs, c: s}
	dev, err := mcp9808.New(bus, &mcp9808.Opts{Addr: 0x18, Res: mcp9808.Maximum})
	if err != nil {
		t.Fatal(err)
	}
	temp, err := dev.SenseTemp()
	if err != nil {
		t.Fatal(err)
	}
	if got := float64(temp-physic.ZeroCelsius) / float64(physic.Celsius); got != 25.25 {
		t.Errorf("temperature %v °C, want 25.25", got)
	}
	if regs[0x08] != 0x03 || regs[0x01] != 0 || regs[0x02] != 0 {
		t.Errorf("resolution register %#x, config % x", regs[0x08], regs[0x01:0x03])
	}
	want := []string{"write byte-data 0x08", "write word-data 0x01", "read i2c-block 0x05"}
	if fmt.Sprint(s.log) != fmt.Sprint(want) {
		t.Errorf("transfers %q, want %q", s.log, want)
	}
}
