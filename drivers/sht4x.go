package drivers

import (
	"fmt"
	"time"

	"periph.io/x/conn/v3/i2c"
)

// sht4x: Sensirion SHT40/41/45 temperature and humidity sensors. periph has
// no driver for them, so this one follows the datasheet (SHT4x datasheet
// section 4): command 0xFD measures with high repeatability (at most 8.3
// ms), then 6 bytes come back: temperature word, CRC, humidity word, CRC,
// CRC-8 with polynomial 0x31 and initial value 0xFF.
//
//	T  = -45 + 175 * S_T / 65535       (°C)
//	RH = -6 + 125 * S_RH / 65535       (%RH, clamped to 0..100)

func init() {
	registerI2C(i2cDriver{name: "sht4x", addresses: []uint16{0x44, 0x45, 0x46}}, openSHT4x)
}

const (
	sht4xMeasureHigh = 0xFD
	sht4xSoftReset   = 0x94
	sht4xMeasureTime = 10 * time.Millisecond
)

// sht4xSleep is how the driver waits for a measurement.
var sht4xSleep = time.Sleep

func openSHT4x(cfg DeviceConfig, env Env) (Device, error) {
	bus, addr, err := openBus(cfg, env, 0x44)
	if err != nil {
		return nil, err
	}
	d := &i2c.Dev{Bus: bus, Addr: addr}
	return &i2cSensor{
		infos: []ChannelInfo{chTemperature, chHumidity},
		read: func() ([]Reading, error) {
			if err := d.Tx([]byte{sht4xMeasureHigh}, nil); err != nil {
				return nil, fmt.Errorf("sht4x: measure: %w", err)
			}
			sht4xSleep(sht4xMeasureTime)
			var b [6]byte
			if err := d.Tx(nil, b[:]); err != nil {
				return nil, fmt.Errorf("sht4x: read: %w", err)
			}
			if sensirionCRC(b[0:2]) != b[2] || sensirionCRC(b[3:5]) != b[5] {
				return nil, fmt.Errorf("sht4x: CRC mismatch in % x", b)
			}
			st := float64(uint16(b[0])<<8 | uint16(b[1]))
			srh := float64(uint16(b[3])<<8 | uint16(b[4]))
			t := -45 + 175*st/65535
			rh := min(max(-6+125*srh/65535, 0), 100)
			return []Reading{reading(chTemperature, t), reading(chHumidity, rh)}, nil
		},
	}, nil
}

// sensirionCRC is the CRC-8 Sensirion sensors append to each word.
func sensirionCRC(b []byte) byte {
	crc := byte(0xFF)
	for _, x := range b {
		crc ^= x
		for range 8 {
			if crc&0x80 != 0 {
				crc = crc<<1 ^ 0x31
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
