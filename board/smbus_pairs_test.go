package board

import (
	"fmt"
	"testing"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"
)

// A chip that reads a multi-byte write as register/value pairs gets one
// SMBus byte-data write per pair, and the registers after the first are left
// alone (as a block write to consecutive registers would not).
func TestSMBusFallbackRegisterPairWrites(t *testing.T) {
	s := newStub(stubFuncs)
	regs := s.chip(0x76)
	for i := 0xF6; i <= 0xFE; i++ {
		regs[i] = 0xEE
	}
	bus := (&SMBusFallback{name: "i2c-0", funcs: stubFuncs, c: s}).RegisterPairWrites()
	if err := bus.Tx(0x76, []byte{0xF4, 0x24, 0xF2, 0x01, 0xF5, 0xA0, 0xF4, 0x25}, nil); err != nil {
		t.Fatal(err)
	}
	want := []string{"write byte-data 0xf4", "write byte-data 0xf2", "write byte-data 0xf5", "write byte-data 0xf4"}
	if fmt.Sprint(s.log) != fmt.Sprint(want) {
		t.Errorf("transfers %q, want %q", s.log, want)
	}
	if regs[0xF2] != 0x01 || regs[0xF4] != 0x25 || regs[0xF5] != 0xA0 || regs[0xF6] != 0xEE || regs[0xF7] != 0xEE {
		t.Errorf("registers F2..F7 % x", regs[0xF2:0xF8])
	}
	// Everything else is as on the adapter: a word write, a block read.
	s.log = nil
	if err := bus.Tx(0x76, []byte{0x10, 1, 2}, nil); err != nil {
		t.Fatal(err)
	}
	r := make([]byte, 3)
	if err := bus.Tx(0x76, []byte{0xF5}, r); err != nil || r[0] != 0xA0 {
		t.Fatalf("read % x, %v", r, err)
	}
	if want := []string{"write word-data 0x10", "read i2c-block 0xf5"}; fmt.Sprint(s.log) != fmt.Sprint(want) {
		t.Errorf("transfers %q, want %q", s.log, want)
	}
	// An odd-length write is a block, as without pairs.
	s.log = nil
	if err := bus.Tx(0x76, []byte{0x20, 1, 2, 3, 4}, nil); err != nil || fmt.Sprint(s.log) != "[write i2c-block 0x20]" {
		t.Errorf("odd write: %q, %v", s.log, err)
	}
}

// periph's BME280 driver, unchanged, on an SMBus-only adapter through
// RegisterPairWrites: its configuration write reaches ctrl_hum, config and
// ctrl_meas, and a forced measurement reads back.
func TestBME280OverSMBusPairWrites(t *testing.T) {
	s := newStub(stubFuncs)
	regs := s.chip(0x76)
	regs[0xD0] = 0x60
	// Calibration of the Bosch BME280 driver's example (dig_T1=27504,
	// dig_T2=26435, dig_T3=-1000, dig_P1=36477, dig_P2=-10685, ...).
	copy(regs[0x88:], []byte{0x70, 0x6B, 0x43, 0x67, 0x18, 0xFC, 0x7D, 0x8E, 0x43, 0xD6, 0xD0, 0x0B,
		0x27, 0x0B, 0x8C, 0x00, 0xF9, 0xFF, 0x8C, 0x3C, 0xF8, 0xC6, 0x70, 0x17, 0x00, 0x4B})
	copy(regs[0xE1:], []byte{0x6A, 0x01, 0x00, 0x13, 0x27, 0x03, 0x1E})
	copy(regs[0xF7:], []byte{0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x6E, 0x8F}) // raw P, T, H
	bus := (&SMBusFallback{name: "i2c-0", funcs: stubFuncs, c: s}).RegisterPairWrites()
	dev, err := bmxx80.NewI2C(bus, 0x76, &bmxx80.Opts{Temperature: bmxx80.O1x, Pressure: bmxx80.O1x, Humidity: bmxx80.O1x})
	if err != nil {
		t.Fatal(err)
	}
	if regs[0xF2] != 0x01 || regs[0xF4] != 0x24 {
		t.Errorf("ctrl_hum %#x, ctrl_meas %#x; want 0x01, 0x24 (1x oversampling, asleep)", regs[0xF2], regs[0xF4])
	}
	if regs[0xF7] != 0x65 || regs[0xF8] != 0x5A {
		t.Errorf("measurement registers overwritten: % x", regs[0xF7:0xFF])
	}
	if err := dev.Sense(new(physic.Env)); err != nil {
		t.Fatal(err)
	}
	if regs[0xF4] != 0x25 {
		t.Errorf("ctrl_meas %#x after a forced read, want 0x25", regs[0xF4])
	}
}
