package drivers

import (
	"context"

	"gatewayd/config"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
)

// What the I2C drivers share: opening the bus, checking the address, and
// turning periph's physic units into readings.

// i2cDriver describes one I2C driver for its configuration check.
type i2cDriver struct {
	name      string
	addresses []uint16 // the addresses the chip can take; the first is the default
}

func registerI2C(d i2cDriver, open Factory) {
	Register(d.name, open)
	RegisterCheck(d.name, func(c *DeviceConfig) error {
		var errs []error
		if c.Address != 0 && !containsAddr(d.addresses, c.Address) {
			errs = append(errs, config.Errorf("address", "address %#02x is not one the %s can take (%s)", c.Address, d.name, addrList(d.addresses)))
		}
		if c.Pin != "" || c.Port != "" {
			errs = append(errs, config.Errorf("bus", "%s is an I2C device: set bus and address, not pin or port", d.name))
		}
		return joinErrs(errs)
	})
}

func containsAddr(list []uint16, a uint16) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

func addrList(list []uint16) string {
	s := ""
	for i, a := range list {
		if i > 0 {
			s += ", "
		}
		s += "0x" + hex2(a)
	}
	return s
}

func hex2(a uint16) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[a>>4&0xf], digits[a&0xf]})
}

// openBus returns the device's bus and address (its default when unset).
func openBus(cfg DeviceConfig, env Env, def uint16) (i2c.Bus, uint16, error) {
	b, err := env.Hardware.I2C(cfg.Bus)
	if err != nil {
		return nil, 0, err
	}
	addr := cfg.Address
	if addr == 0 {
		addr = def
	}
	return b, addr, nil
}

// i2cSensor is a polled I2C sensor built from a read function.
type i2cSensor struct {
	infos []ChannelInfo
	read  func() ([]Reading, error)
	close func() error
}

func (s *i2cSensor) Channels() []ChannelInfo { return s.infos }

func (s *i2cSensor) Read(ctx context.Context) ([]Reading, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.read()
}

func (s *i2cSensor) Close() error {
	if s.close != nil {
		return s.close()
	}
	return nil
}

// Channels the environmental sensors share.
var (
	chTemperature = ChannelInfo{Channel: "temperature", Unit: "°C", DeviceClass: "temperature", StateClass: "measurement", Precision: 2}
	chHumidity    = ChannelInfo{Channel: "humidity", Unit: "%", DeviceClass: "humidity", StateClass: "measurement", Precision: 1}
	chPressure    = ChannelInfo{Channel: "pressure", Unit: "hPa", DeviceClass: "atmospheric_pressure", StateClass: "measurement", Precision: 2}
)

func celsius(t physic.Temperature) float64 {
	return float64(t-physic.ZeroCelsius) / float64(physic.Celsius)
}

func percentRH(h physic.RelativeHumidity) float64 { return float64(h) / float64(physic.PercentRH) }

func hectopascal(p physic.Pressure) float64 { return float64(p) / float64(100*physic.Pascal) }

func reading(ch ChannelInfo, v float64) Reading {
	return Reading{Channel: ch.Channel, Value: v, Unit: ch.Unit}
}
