package drivers

import (
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ina219"
)

// ina219: Texas Instruments current and power monitor at 0x40-0x4f, through
// periph's ina219 driver, calibrated from the shunt resistance (shunt, ohms,
// default 0.1) and the largest expected current (max_current, amperes,
// default 3.2) as the datasheet's calibration formula (section 8.5.1) asks.

func init() {
	addrs := make([]uint16, 0, 16)
	for a := uint16(0x40); a <= 0x4f; a++ {
		addrs = append(addrs, a)
	}
	registerI2C(i2cDriver{name: "ina219", addresses: addrs}, openINA219)
}

var (
	chBusVoltage   = ChannelInfo{Channel: "voltage", Unit: "V", DeviceClass: "voltage", StateClass: "measurement", Precision: 3}
	chShuntVoltage = ChannelInfo{Channel: "shunt_voltage", Unit: "mV", DeviceClass: "voltage", StateClass: "measurement", Precision: 2}
	chCurrent      = ChannelInfo{Channel: "current", Unit: "A", DeviceClass: "current", StateClass: "measurement", Precision: 4}
	chPower        = ChannelInfo{Channel: "power", Unit: "W", DeviceClass: "power", StateClass: "measurement", Precision: 3}
)

func openINA219(cfg DeviceConfig, env Env) (Device, error) {
	bus, addr, err := openBus(cfg, env, 0x40)
	if err != nil {
		return nil, err
	}
	opts := ina219.Opts{Address: int(addr), SenseResistor: 100 * physic.MilliOhm, MaxCurrent: 3200 * physic.MilliAmpere}
	if cfg.Shunt > 0 {
		opts.SenseResistor = physic.ElectricResistance(cfg.Shunt * float64(physic.Ohm))
	}
	if cfg.MaxCurrent > 0 {
		opts.MaxCurrent = physic.ElectricCurrent(cfg.MaxCurrent * float64(physic.Ampere))
	}
	dev, err := ina219.New(bus, &opts)
	if err != nil {
		return nil, err
	}
	return &i2cSensor{
		infos: []ChannelInfo{chBusVoltage, chShuntVoltage, chCurrent, chPower},
		read: func() ([]Reading, error) {
			pm, err := dev.Sense()
			if err != nil {
				return nil, err
			}
			return []Reading{
				reading(chBusVoltage, float64(pm.Voltage)/float64(physic.Volt)),
				reading(chShuntVoltage, float64(pm.Shunt)/float64(physic.MilliVolt)),
				reading(chCurrent, float64(pm.Current)/float64(physic.Ampere)),
				reading(chPower, float64(pm.Power)/float64(physic.Watt)),
			}, nil
		},
	}, nil
}
