package drivers

import (
	"periph.io/x/devices/v3/scd4x"
)

// scd4x: Sensirion SCD40/SCD41 CO2 sensors at 0x62, through periph's scd4x
// driver in periodic measurement mode (a new value every 5 s); a read waits
// for the data-ready flag, then reads CO2, temperature and humidity.

func init() {
	registerI2C(i2cDriver{name: "scd4x", addresses: []uint16{scd4x.SensorAddress}}, openSCD4x)
}

var chCO2 = ChannelInfo{Channel: "co2", Unit: "ppm", DeviceClass: "carbon_dioxide", StateClass: "measurement", Precision: 0}

func openSCD4x(cfg DeviceConfig, env Env) (Device, error) {
	bus, addr, err := openBus(cfg, env, scd4x.SensorAddress)
	if err != nil {
		return nil, err
	}
	dev, err := scd4x.NewI2C(bus, addr)
	if err != nil {
		return nil, err
	}
	return &i2cSensor{
		infos: []ChannelInfo{chCO2, chTemperature, chHumidity},
		read: func() ([]Reading, error) {
			var e scd4x.Env
			if err := dev.Sense(&e); err != nil {
				return nil, err
			}
			return []Reading{
				reading(chCO2, float64(e.CO2)),
				reading(chTemperature, celsius(e.Temperature)),
				reading(chHumidity, percentRH(e.Humidity)),
			}, nil
		},
		close: dev.Halt,
	}, nil
}
