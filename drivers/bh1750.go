package drivers

import (
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/devices/v3/bh1750"
)

// bh1750: ROHM ambient light sensor at 0x23 (ADDR low) or 0x5c, initialised by
// periph's bh1750 driver, in continuous high-resolution mode (1 lx, 120 ms).
// lx = count / 1.2 (datasheet, "measurement sequence example").

func init() {
	registerI2C(i2cDriver{name: "bh1750", addresses: []uint16{0x23, 0x5c}}, openBH1750)
}

// bh1750HighResTime is the high-resolution measurement time (120 ms at
// most, datasheet) with a margin.
const bh1750HighResTime = 140 * time.Millisecond

var bh1750Sleep = time.Sleep

var chIlluminance = ChannelInfo{Channel: "illuminance", Unit: "lx", DeviceClass: "illuminance", StateClass: "measurement", Precision: 1}

func openBH1750(cfg DeviceConfig, env Env) (Device, error) {
	bus, addr, err := openBus(cfg, env, bh1750.I2CAddr)
	if err != nil {
		return nil, err
	}
	_, err = bh1750.NewI2C(bus, addr)
	if err != nil {
		return nil, err
	}
	raw := &i2c.Dev{Bus: bus, Addr: addr}
	return &i2cSensor{
		infos: []ChannelInfo{chIlluminance},
		read: func() ([]Reading, error) {
			// The same transfers as periph's Sense, whose result is cut to
			// whole lux (it converts count/1.2 to an integer).
			if _, err := raw.Write([]byte{byte(bh1750.ContinuousHighResMode)}); err != nil {
				return nil, fmt.Errorf("bh1750: %w", err)
			}
			bh1750Sleep(bh1750HighResTime)
			var b [2]byte
			if err := raw.Tx([]byte{byte(bh1750.ContinuousHighResMode)}, b[:]); err != nil {
				return nil, fmt.Errorf("bh1750: %w", err)
			}
			return []Reading{reading(chIlluminance, float64(uint16(b[0])<<8|uint16(b[1]))/1.2)}, nil
		},
		// Power Down (opcode 0x00): periph's Halt sends the reset opcode.
		close: func() error { _, err := raw.Write([]byte{0x00}); return err },
	}, nil
}
