package board

import (
	"errors"
	"fmt"
	"sync"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// Linux i2c-dev constants (include/uapi/linux/i2c.h, i2c-dev.h).
const (
	i2cFuncI2C               = 0x00000001
	i2cFuncSMBusQuick        = 0x00010000
	i2cFuncSMBusReadByte     = 0x00020000
	i2cFuncSMBusWriteByte    = 0x00040000
	i2cFuncSMBusReadByteData = 0x00080000
	i2cFuncSMBusWriteByteDat = 0x00100000
	i2cFuncSMBusWriteWord    = 0x00400000
	i2cFuncSMBusReadI2CBlock = 0x04000000
	i2cFuncSMBusWriteI2CBlk  = 0x08000000

	smbusRead  = 1
	smbusWrite = 0

	smbusQuick        = 0
	smbusByte         = 1
	smbusByteData     = 2
	smbusWordData     = 3
	smbusI2CBlockData = 8

	// SMBusBlockMax is the most an SMBus block transfer carries.
	SMBusBlockMax = 32
)

// smbusData is the kernel's union i2c_smbus_data: a byte, a little-endian
// word, or a block whose first byte is its length.
type smbusData [SMBusBlockMax + 2]byte

// smbusConn is one adapter's SMBus transfers: the ioctls on /dev/i2c-N, or
// a test double.
type smbusConn interface {
	setAddr(addr uint16) error
	xfer(readWrite uint8, command uint8, size uint32, data *smbusData) error
	close() error
}

// ErrNotSMBus is returned by SMBusFallback for a transfer SMBus cannot
// express (a read without a register, more than 32 bytes, a 16-bit
// register address).
var ErrNotSMBus = errors.New("transfer not expressible as SMBus on an adapter without plain I2C")

// SMBusFallback is an i2c.Bus on an adapter that only does SMBus transfers
// (no I2C_FUNC_I2C: i2c-stub, some USB and PC adapters). It maps the
// transfers register-based drivers make:
//
//	w=[reg]            r=[]      SMBus send byte
//	w=[reg v]          r=[]      SMBus write byte data
//	w=[reg lo hi]      r=[]      SMBus write word data (bytes in wire order)
//	w=[reg v1..vn]     r=[]      SMBus I2C block write (n ≤ 32)
//	w=[reg]            r=[1]     SMBus read byte data
//	w=[reg]            r=[n]     SMBus I2C block read (n ≤ 32)
//	w=[]               r=[1]     SMBus receive byte
//	w=[]               r=[]      SMBus quick write
//
// Anything else fails with ErrNotSMBus. A multi-byte write is a block to
// consecutive registers (register auto-increment), as most chips read it.
// Some chips (Bosch BME280/BMP280) read a multi-byte write as
// register/value pairs instead: a driver for such a chip asks for
// RegisterPairWrites, under which each pair becomes its own SMBus write
// byte data.
type SMBusFallback struct {
	name  string
	funcs uint64
	mu    sync.Mutex
	c     smbusConn
}

func (s *SMBusFallback) String() string { return s.name + " (SMBus only)" }

// Close closes the adapter.
func (s *SMBusFallback) Close() error { return s.c.close() }

// SetSpeed is not possible from user space on Linux.
func (s *SMBusFallback) SetSpeed(physic.Frequency) error {
	return errors.New("i2c: the bus speed is set by the kernel (device tree)")
}

// SCL and SDA are not known.
func (s *SMBusFallback) SCL() gpio.PinIO { return gpio.INVALID }
func (s *SMBusFallback) SDA() gpio.PinIO { return gpio.INVALID }

func (s *SMBusFallback) need(f uint64, what string) error {
	if s.funcs&f == 0 {
		return fmt.Errorf("%s: the adapter cannot do SMBus %s", s.name, what)
	}
	return nil
}

// RegisterPairWrites returns the adapter as seen by a chip that reads a
// multi-byte write as register/value pairs (w=[reg1 v1 reg2 v2 ...], the
// BME280's burst write, datasheet 6.2.1): such a write becomes one SMBus
// write byte data per pair, in order, with no other transfer in between.
// Reads and other writes are as on the adapter. Drivers find it through an
// interface assertion, since they do not import this package.
func (s *SMBusFallback) RegisterPairWrites() i2c.Bus { return pairWrites{s} }

// pairWrites is SMBusFallback for a chip whose writes are register/value
// pairs.
type pairWrites struct{ s *SMBusFallback }

func (p pairWrites) String() string                    { return p.s.String() }
func (p pairWrites) SetSpeed(f physic.Frequency) error { return p.s.SetSpeed(f) }
func (p pairWrites) SCL() gpio.PinIO                   { return gpio.INVALID }
func (p pairWrites) SDA() gpio.PinIO                   { return gpio.INVALID }
func (p pairWrites) Tx(addr uint16, w, r []byte) error {
	if len(r) != 0 || len(w) < 4 || len(w)%2 != 0 {
		return p.s.Tx(addr, w, r)
	}
	s := p.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.c.setAddr(addr); err != nil {
		return fmt.Errorf("%s: address %#02x: %w", s.name, addr, err)
	}
	for i := 0; i < len(w); i += 2 {
		if err := s.tx(w[i:i+2], nil); err != nil {
			return fmt.Errorf("%s: address %#02x: register %#02x: %w", s.name, addr, w[i], err)
		}
	}
	return nil
}

// Tx implements i2c.Bus.
func (s *SMBusFallback) Tx(addr uint16, w, r []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.c.setAddr(addr); err != nil {
		return fmt.Errorf("%s: address %#02x: %w", s.name, addr, err)
	}
	err := s.tx(w, r)
	if err != nil {
		return fmt.Errorf("%s: address %#02x: %w", s.name, addr, err)
	}
	return nil
}

func (s *SMBusFallback) tx(w, r []byte) error {
	var d smbusData
	switch {
	case len(w) == 0 && len(r) == 0:
		if err := s.need(i2cFuncSMBusQuick, "quick"); err != nil {
			return err
		}
		return s.c.xfer(smbusWrite, 0, smbusQuick, nil)
	case len(w) == 0 && len(r) == 1:
		if err := s.need(i2cFuncSMBusReadByte, "receive byte"); err != nil {
			return err
		}
		if err := s.c.xfer(smbusRead, 0, smbusByte, &d); err != nil {
			return err
		}
		r[0] = d[0]
		return nil
	case len(w) == 1 && len(r) == 0:
		if err := s.need(i2cFuncSMBusWriteByte, "send byte"); err != nil {
			return err
		}
		return s.c.xfer(smbusWrite, w[0], smbusByte, nil)
	case len(w) == 2 && len(r) == 0:
		if err := s.need(i2cFuncSMBusWriteByteDat, "write byte data"); err != nil {
			return err
		}
		d[0] = w[1]
		return s.c.xfer(smbusWrite, w[0], smbusByteData, &d)
	case len(w) == 3 && len(r) == 0 && s.funcs&i2cFuncSMBusWriteWord != 0:
		// An SMBus word goes low byte first: the wire order of w[1], w[2].
		d[0], d[1] = w[1], w[2]
		return s.c.xfer(smbusWrite, w[0], smbusWordData, &d)
	case len(w) >= 3 && len(r) == 0:
		n := len(w) - 1
		if n > SMBusBlockMax {
			return fmt.Errorf("write of %d bytes: %w", n, ErrNotSMBus)
		}
		if err := s.need(i2cFuncSMBusWriteI2CBlk, "I2C block write"); err != nil {
			return err
		}
		d[0] = byte(n)
		copy(d[1:], w[1:])
		return s.c.xfer(smbusWrite, w[0], smbusI2CBlockData, &d)
	case len(w) == 1 && len(r) == 1 && s.funcs&i2cFuncSMBusReadByteData != 0:
		if err := s.c.xfer(smbusRead, w[0], smbusByteData, &d); err != nil {
			return err
		}
		r[0] = d[0]
		return nil
	case len(w) == 1 && len(r) >= 1:
		if len(r) > SMBusBlockMax {
			return fmt.Errorf("read of %d bytes: %w", len(r), ErrNotSMBus)
		}
		if err := s.need(i2cFuncSMBusReadI2CBlock, "I2C block read"); err != nil {
			return err
		}
		d[0] = byte(len(r))
		if err := s.c.xfer(smbusRead, w[0], smbusI2CBlockData, &d); err != nil {
			return err
		}
		if int(d[0]) < len(r) {
			return fmt.Errorf("I2C block read returned %d of %d bytes", d[0], len(r))
		}
		copy(r, d[1:1+len(r)])
		return nil
	}
	return fmt.Errorf("write %d bytes then read %d: %w", len(w), len(r), ErrNotSMBus)
}

var _ i2c.BusCloser = (*SMBusFallback)(nil)
