package drivers

import (
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/tmp102"
)

// tmp102: Texas Instruments temperature sensor at 0x48-0x4b, through
// periph's tmp102 driver (continuous conversion at 4 Hz, comparator mode,
// the power-on defaults).

func init() {
	registerI2C(i2cDriver{name: "tmp102", addresses: []uint16{0x48, 0x49, 0x4a, 0x4b}}, openTMP102)
}

func openTMP102(cfg DeviceConfig, env Env) (Device, error) {
	bus, addr, err := openBus(cfg, env, 0x48)
	if err != nil {
		return nil, err
	}
	dev, err := tmp102.NewI2C(bus, addr, &tmp102.Opts{SampleRate: tmp102.RateFourHertz, AlertSetting: tmp102.ModeComparator})
	if err != nil {
		return nil, err
	}
	return &i2cSensor{
		infos: []ChannelInfo{chTemperature},
		read: func() ([]Reading, error) {
			var e physic.Env
			if err := dev.Sense(&e); err != nil {
				return nil, err
			}
			return []Reading{reading(chTemperature, celsius(e.Temperature))}, nil
		},
	}, nil
}
