package drivers

import (
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"
)

// bme280 and bmp280: Bosch temperature, pressure (and, BME280, humidity)
// sensors, through periph's bmxx80 driver, which detects the chip from its
// id and applies the datasheet's compensation. Each read is one forced-mode
// measurement with 1x oversampling and the filter off: the datasheet's
// "weather monitoring" setting (BME280 datasheet 3.5.1), a sensor asleep
// between reads.

func init() {
	registerI2C(i2cDriver{name: "bme280", addresses: []uint16{0x76, 0x77}}, openBMx280(true))
	registerI2C(i2cDriver{name: "bmp280", addresses: []uint16{0x76, 0x77}}, openBMx280(false))
}

func openBMx280(humidity bool) Factory {
	return func(cfg DeviceConfig, env Env) (Device, error) {
		bus, addr, err := openBus(cfg, env, 0x76)
		if err != nil {
			return nil, err
		}
		// The chip reads a multi-byte write as register/value pairs; an
		// SMBus-only adapter (board.SMBusFallback) carries them one by one.
		if p, ok := bus.(interface{ RegisterPairWrites() i2c.Bus }); ok {
			bus = p.RegisterPairWrites()
		}
		opts := bmxx80.Opts{Temperature: bmxx80.O1x, Pressure: bmxx80.O1x}
		if humidity {
			opts.Humidity = bmxx80.O1x
		}
		dev, err := bmxx80.NewI2C(bus, addr, &opts)
		if err != nil {
			return nil, err
		}
		infos := []ChannelInfo{chTemperature, chPressure}
		if humidity {
			infos = append(infos, chHumidity)
		}
		return &i2cSensor{
			infos: infos,
			read: func() ([]Reading, error) {
				var e physic.Env
				if err := dev.Sense(&e); err != nil {
					return nil, err
				}
				out := []Reading{reading(chTemperature, celsius(e.Temperature)), reading(chPressure, hectopascal(e.Pressure))}
				if humidity {
					out = append(out, reading(chHumidity, percentRH(e.Humidity)))
				}
				return out, nil
			},
			close: dev.Halt,
		}, nil
	}
}
