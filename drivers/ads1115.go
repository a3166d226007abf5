package drivers

import (
	"fmt"
	"strings"

	"gatewayd/config"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ads1x15"
)

// ads1115: Texas Instruments 16-bit 4-channel ADC at 0x48-0x4b, through
// periph's ads1x15 driver: single-shot conversions at 128 samples/s, one
// channel after the other. inputs lists what to convert (a0..a3 single
// ended, a0-a1, a0-a3, a1-a3, a2-a3 differential; default a0..a3), each
// published as a channel of that name in volts; gain is the full-scale
// range in volts (6.144, 4.096 (default), 2.048, 1.024, 0.512, 0.256).

func init() {
	registerI2C(i2cDriver{name: "ads1115", addresses: []uint16{0x48, 0x49, 0x4a, 0x4b}}, openADS1115)
	base := lookupCheck("ads1115")
	RegisterCheck("ads1115", func(c *DeviceConfig) error {
		errs := []error{base(c)}
		if _, err := adsRange(c.Gain); err != nil {
			errs = append(errs, config.Errorf("gain", "%v", err))
		}
		for i, in := range c.Inputs {
			if _, ok := adsInputs[strings.ToLower(in)]; !ok {
				errs = append(errs, config.Errorf(fmt.Sprintf("inputs[%d]", i), "input %q is not a0..a3, a0-a1, a0-a3, a1-a3 or a2-a3", in))
			}
		}
		return joinErrs(errs)
	})
}

func lookupCheck(name string) Check {
	regMu.RLock()
	defer regMu.RUnlock()
	return registry[name].check
}

var adsInputs = map[string]ads1x15.Channel{
	"a0": ads1x15.Channel0, "a1": ads1x15.Channel1, "a2": ads1x15.Channel2, "a3": ads1x15.Channel3,
	"a0-a1": ads1x15.Channel0Minus1, "a0-a3": ads1x15.Channel0Minus3,
	"a1-a3": ads1x15.Channel1Minus3, "a2-a3": ads1x15.Channel2Minus3,
}

func adsRange(gain float64) (physic.ElectricPotential, error) {
	switch gain {
	case 0, 4.096:
		return 4096 * physic.MilliVolt, nil
	case 6.144, 2.048, 1.024, 0.512, 0.256:
		return physic.ElectricPotential(gain*1000+0.5) * physic.MilliVolt, nil
	}
	return 0, fmt.Errorf("gain %v is not a full-scale range of 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256 V", gain)
}

func openADS1115(cfg DeviceConfig, env Env) (Device, error) {
	fsr, err := adsRange(cfg.Gain)
	if err != nil {
		return nil, err
	}
	inputs := cfg.Inputs
	if len(inputs) == 0 {
		inputs = []string{"a0", "a1", "a2", "a3"}
	}
	bus, addr, err := openBus(cfg, env, ads1x15.I2CAddr)
	if err != nil {
		return nil, err
	}
	dev, err := ads1x15.NewADS1115(bus, &ads1x15.Opts{I2cAddress: addr})
	if err != nil {
		return nil, err
	}
	type input struct {
		info ChannelInfo
		pin  ads1x15.PinADC
	}
	var ins []input
	var infos []ChannelInfo
	for _, name := range inputs {
		name = strings.ToLower(name)
		ch, ok := adsInputs[name]
		if !ok {
			return nil, fmt.Errorf("ads1115: unknown input %q", name)
		}
		pin, err := dev.PinForChannel(ch, fsr, 128*physic.Hertz, ads1x15.BestQuality)
		if err != nil {
			return nil, fmt.Errorf("ads1115 %s: %w", name, err)
		}
		info := ChannelInfo{Channel: name, Unit: "V", DeviceClass: "voltage", StateClass: "measurement", Precision: 4}
		ins = append(ins, input{info, pin})
		infos = append(infos, info)
	}
	return &i2cSensor{
		infos: infos,
		read: func() ([]Reading, error) {
			out := make([]Reading, 0, len(ins))
			for _, in := range ins {
				s, err := in.pin.Read()
				if err != nil {
					return nil, fmt.Errorf("ads1115 %s: %w", in.info.Channel, err)
				}
				out = append(out, reading(in.info, float64(s.V)/float64(physic.Volt)))
			}
			return out, nil
		},
	}, nil
}
