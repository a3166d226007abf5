package drivers

import (
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/aht20"
)

// aht20: Aosong temperature and humidity sensor at 0x38, through periph's
// aht20 driver (calibrates the sensor if its status says it is not, checks
// each measurement's CRC).

func init() {
	registerI2C(i2cDriver{name: "aht20", addresses: []uint16{0x38}}, openAHT20)
}

func openAHT20(cfg DeviceConfig, env Env) (Device, error) {
	bus, _, err := openBus(cfg, env, 0x38)
	if err != nil {
		return nil, err
	}
	opts := aht20.DefaultOpts
	opts.ValidateData = true
	dev, err := aht20.NewI2C(bus, &opts)
	if err != nil {
		return nil, err
	}
	return &i2cSensor{
		infos: []ChannelInfo{chTemperature, chHumidity},
		read: func() ([]Reading, error) {
			var e physic.Env
			if err := dev.Sense(&e); err != nil {
				return nil, err
			}
			return []Reading{reading(chTemperature, celsius(e.Temperature)), reading(chHumidity, percentRH(e.Humidity))}, nil
		},
	}, nil
}
