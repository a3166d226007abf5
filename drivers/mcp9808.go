package drivers

import (
	"periph.io/x/devices/v3/mcp9808"
)

// mcp9808: Microchip ±0.25 °C temperature sensor at 0x18-0x1f, through
// periph's mcp9808 driver at its maximum resolution (0.0625 °C).

func init() {
	registerI2C(i2cDriver{name: "mcp9808", addresses: []uint16{0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f}}, openMCP9808)
}

func openMCP9808(cfg DeviceConfig, env Env) (Device, error) {
	bus, addr, err := openBus(cfg, env, 0x18)
	if err != nil {
		return nil, err
	}
	dev, err := mcp9808.New(bus, &mcp9808.Opts{Addr: int(addr), Res: mcp9808.Maximum})
	if err != nil {
		return nil, err
	}
	return &i2cSensor{
		infos: []ChannelInfo{chTemperature},
		read: func() ([]Reading, error) {
			t, err := dev.SenseTemp()
			if err != nil {
				return nil, err
			}
			return []Reading{reading(chTemperature, celsius(t))}, nil
		},
	}, nil
}
