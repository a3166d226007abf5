package drivers

import (
	"math"
	"strconv"
	"testing"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
)

// Each I2C driver is run through the Runner against i2ctest.Playback holding
// the register traffic its datasheet prescribes, and the values published to
// the broker are compared with the datasheet's worked example or with the
// datasheet's formula computed here, independently of periph's code.

// publishedI2C runs one device of driver on a Playback of ops (bus "1"),
// waits for one published value of each channel in want, and checks every
// transfer was made. Channels are published with 6 decimals.
func publishedI2C(t *testing.T, d DeviceConfig, ops []i2ctest.IO, channels ...string) map[string]float64 {
	t.Helper()
	noLeaks(t)
	b := startBroker(t)
	pb := &i2ctest.Playback{Ops: ops, DontPanic: true}
	hw := &fakeHardware{buses: map[string]i2c.Bus{"1": pb}}
	d.Name, d.Bus, d.Interval = "dev", "1", time.Hour
	d.Channels = map[string]ChannelConfig{}
	for _, ch := range channels {
		d.Channels[ch] = ChannelConfig{Precision: ptr(6)}
	}
	sub := subscribe(t, b, "gatewayd/gw1/dev/#")
	r, stop := startRunner(t, b, oneDevice(d), hw)
	got := map[string]float64{}
	for _, ch := range channels {
		m, _ := sub.next(0, "gatewayd/gw1/dev/"+ch)
		v, err := strconv.ParseFloat(m.Payload, 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", ch, m.Payload, err)
		}
		got[ch] = v
	}
	sub.expect(0, "gatewayd/gw1/dev/status", "online")
	stop()
	if err := pb.Close(); err != nil {
		t.Errorf("register traffic: %v", err)
	}
	if st := r.Stats()[0]; st.Errors != 0 {
		t.Errorf("stats: %+v", st)
	}
	return got
}

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %.6f, want %.6f (±%g)", what, got, want, tol)
	}
}

// crc8 is the Sensirion/Aosong CRC: polynomial 0x31, initial value 0xFF, no
// final XOR (SHT4x datasheet 4.4: CRC(0xBEEF) = 0x92).
func crc8(b ...byte) byte {
	c := byte(0xFF)
	for _, x := range b {
		for i := 7; i >= 0; i-- {
			bit := (c>>7)&1 ^ (x>>uint(i))&1
			c <<= 1
			if bit == 1 {
				c ^= 0x31
			}
		}
	}
	return c
}

func TestCRC8DatasheetExample(t *testing.T) {
	if got := crc8(0xBE, 0xEF); got != 0x92 {
		t.Fatalf("crc8(0xBEEF) = %#x, want 0x92", got)
	}
	if got := sensirionCRC([]byte{0xBE, 0xEF}); got != 0x92 {
		t.Fatalf("sensirionCRC(0xBEEF) = %#x, want 0x92", got)
	}
}

// Bosch's worked example (BMP280 datasheet, section 3.12, table "compensation
// formula example"; the BME280 uses the same temperature and pressure
// compensation): trimming values and raw readings giving 25.08 °C and
// 100653.27 Pa.
var boschCal = struct {
	T1          uint16
	T2, T3      int16
	P1          uint16
	P2, P3, P4  int16
	P5, P6, P7  int16
	P8, P9      int16
	adcT, adcP  int32
	wantT       float64
	wantPPascal float64
}{27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000, 519888, 415148, 25.08, 100653.27}

// Humidity trimming of a BME280 (there is no worked example for humidity:
// the expectation is the datasheet's floating-point formula, section 4.2.3).
var boschHum = struct {
	H1   uint8
	H2   int16
	H3   uint8
	H4   int16
	H5   int16
	H6   int8
	adcH int32
}{75, 362, 0, 313, 50, 30, 27000}

func le16(v uint16) []byte { return []byte{byte(v), byte(v >> 8)} }

func bmeCalibration(bme bool) (tph, h []byte) {
	c := boschCal
	for _, v := range []uint16{c.T1, uint16(c.T2), uint16(c.T3), c.P1, uint16(c.P2), uint16(c.P3), uint16(c.P4),
		uint16(c.P5), uint16(c.P6), uint16(c.P7), uint16(c.P8), uint16(c.P9)} {
		tph = append(tph, le16(v)...)
	}
	hc := boschHum
	tph = append(tph, 0x00, hc.H1) // 0xA0 unused, 0xA1 dig_H1
	// 0xE1..0xE7: dig_H2 (LE), dig_H3, dig_H4 [11:4] | [3:0], dig_H5 [3:0] | [11:4], dig_H6
	h = append(le16(uint16(hc.H2)), hc.H3,
		byte(hc.H4>>4), byte(hc.H4&0x0F)|byte(hc.H5&0x0F)<<4, byte(hc.H5>>4), byte(hc.H6))
	return tph, h
}

func bmeRaw(adcP, adcT, adcH int32) []byte {
	return []byte{
		byte(adcP >> 12), byte(adcP >> 4), byte(adcP<<4) & 0xF0,
		byte(adcT >> 12), byte(adcT >> 4), byte(adcT<<4) & 0xF0,
		byte(adcH >> 8), byte(adcH),
	}
}

// bmeHumidity is the BME280 datasheet's double-precision humidity formula.
func bmeHumidity() float64 {
	c, h := boschCal, boschHum
	v1 := (float64(c.adcT)/16384.0 - float64(c.T1)/1024.0) * float64(c.T2)
	v2 := (float64(c.adcT)/131072.0 - float64(c.T1)/8192.0) * (float64(c.adcT)/131072.0 - float64(c.T1)/8192.0) * float64(c.T3)
	tFine := v1 + v2
	vh := tFine - 76800.0
	vh = (float64(h.adcH) - (float64(h.H4)*64.0 + float64(h.H5)/16384.0*vh)) *
		(float64(h.H2) / 65536.0 * (1.0 + float64(h.H6)/67108864.0*vh*(1.0+float64(h.H3)/67108864.0*vh)))
	vh = vh * (1.0 - float64(h.H1)*vh/524288.0)
	return min(max(vh, 0), 100)
}

func TestBME280DatasheetCompensation(t *testing.T) {
	tph, h := bmeCalibration(true)
	const ctrlSleep = 0x01<<5 | 0x01<<2 | 0x00 // osrs_t 1x, osrs_p 1x, sleep
	const ctrlForced = 0x01<<5 | 0x01<<2 | 0x01
	ops := []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xD0}, R: []byte{0x60}}, // chip id: BME280
		{Addr: 0x76, W: []byte{0x88}, R: tph},          // calib00..calib25
		{Addr: 0x76, W: []byte{0xE1}, R: h},            // calib26..calib32
		// ctrl_meas (sleep), ctrl_hum 1x, config (t_sb 1000 ms, filter off),
		// ctrl_meas last (datasheet 5.4.3: ctrl_hum takes effect after it)
		{Addr: 0x76, W: []byte{0xF4, ctrlSleep, 0xF2, 0x01, 0xF5, 0x05 << 5, 0xF4, ctrlSleep}},
		// one forced measurement, status until idle, then burst read 0xF7..0xFE
		{Addr: 0x76, W: []byte{0xF4, ctrlForced}},
		{Addr: 0x76, W: []byte{0xF3}, R: []byte{0x00}},
		{Addr: 0x76, W: []byte{0xF7}, R: bmeRaw(boschCal.adcP, boschCal.adcT, boschHum.adcH)},
	}
	got := publishedI2C(t, DeviceConfig{Driver: "bme280"}, ops, "temperature", "pressure", "humidity")
	near(t, "temperature °C", got["temperature"], boschCal.wantT, 0.005)
	near(t, "pressure hPa", got["pressure"], boschCal.wantPPascal/100, 0.01)
	near(t, "humidity %", got["humidity"], bmeHumidity(), 0.05)
}

func TestBMP280DatasheetCompensation(t *testing.T) {
	tph, _ := bmeCalibration(false)
	const ctrlSleep = 0x01<<5 | 0x01<<2
	ops := []i2ctest.IO{
		{Addr: 0x77, W: []byte{0xD0}, R: []byte{0x58}}, // chip id: BMP280
		{Addr: 0x77, W: []byte{0x88}, R: tph},
		{Addr: 0x77, W: []byte{0xF4, ctrlSleep, 0xF5, 0x05 << 5, 0xF4, ctrlSleep}},
		{Addr: 0x77, W: []byte{0xF4, ctrlSleep | 0x01}},
		{Addr: 0x77, W: []byte{0xF3}, R: []byte{0x00}},
		{Addr: 0x77, W: []byte{0xF7}, R: bmeRaw(boschCal.adcP, boschCal.adcT, 0)[:6]},
	}
	got := publishedI2C(t, DeviceConfig{Driver: "bmp280", Address: 0x77}, ops, "temperature", "pressure")
	near(t, "temperature °C", got["temperature"], 25.08, 0.005)
	near(t, "pressure hPa", got["pressure"], 1006.5327, 0.01)
}

func TestAHT20DatasheetConversion(t *testing.T) {
	// AHT20 datasheet 5.4: RH = S_RH / 2^20 * 100 %, T = S_T / 2^20 * 200 - 50 °C.
	var srh, st uint32 = 0x80000, 0x60000
	data := []byte{0x1C, byte(srh >> 12), byte(srh >> 4), byte(srh<<4)&0xF0 | byte(st>>16), byte(st >> 8), byte(st)}
	data = append(data, crc8(data...))
	ops := []i2ctest.IO{
		{Addr: 0x38, W: []byte{0x71}, R: []byte{0x18}}, // status: calibrated
		{Addr: 0x38, W: []byte{0xAC, 0x33, 0x00}},      // trigger measurement
		{Addr: 0x38, R: data},                          // status (not busy), 5 data bytes, CRC
	}
	got := publishedI2C(t, DeviceConfig{Driver: "aht20"}, ops, "temperature", "humidity")
	near(t, "temperature °C", got["temperature"], float64(st)/(1<<20)*200-50, 1e-4)
	near(t, "humidity %", got["humidity"], float64(srh)/(1<<20)*100, 1e-4)
}

func TestSHT4xDatasheetConversion(t *testing.T) {
	// SHT4x datasheet 4.6: T = -45 + 175 * S_T / (2^16 - 1), RH = -6 + 125 * S_RH / (2^16 - 1).
	const sT, sRH = 0x6666, 0x8000
	data := []byte{sT >> 8, sT & 0xFF, crc8(sT>>8, sT&0xFF), sRH >> 8, sRH & 0xFF, crc8(sRH>>8, sRH&0xFF)}
	ops := []i2ctest.IO{
		{Addr: 0x44, W: []byte{0xFD}}, // measure T & RH with high precision
		{Addr: 0x44, R: data},
	}
	got := publishedI2C(t, DeviceConfig{Driver: "sht4x"}, ops, "temperature", "humidity")
	near(t, "temperature °C", got["temperature"], -45+175*float64(sT)/65535, 1e-5)
	near(t, "humidity %", got["humidity"], -6+125*float64(sRH)/65535, 1e-5)
}

func TestSHT4xRefusesABadCRC(t *testing.T) {
	pb := &i2ctest.Playback{DontPanic: true, Ops: []i2ctest.IO{
		{Addr: 0x44, W: []byte{0xFD}},
		{Addr: 0x44, R: []byte{0x66, 0x66, 0x00, 0x80, 0x00, 0x00}},
	}}
	dev, err := Open(DeviceConfig{Name: "s", Driver: "sht4x", Bus: "1"}, Env{Hardware: &fakeHardware{buses: map[string]i2c.Bus{"1": pb}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.(Sensor).Read(t.Context()); err == nil {
		t.Fatal("a reading with a bad CRC was accepted")
	}
}

func TestMCP9808DatasheetConversion(t *testing.T) {
	// MCP9808 datasheet 5.1.3: T_A = UpperByte[3:0] * 16 + LowerByte / 16 when
	// the sign bit (bit 12) is clear; bits 15-13 are alert flags.
	upper, lower := byte(0xC1), byte(0x94)
	ops := []i2ctest.IO{
		{Addr: 0x18, W: []byte{0x08, 0x03}},       // resolution 0.0625 °C
		{Addr: 0x18, W: []byte{0x01, 0x00, 0x00}}, // CONFIG: continuous conversion
		{Addr: 0x18, W: []byte{0x05}, R: []byte{upper, lower}},
	}
	got := publishedI2C(t, DeviceConfig{Driver: "mcp9808"}, ops, "temperature")
	near(t, "temperature °C", got["temperature"], float64(upper&0x0F)*16+float64(lower)/16, 1e-6)
}

func TestTMP102DatasheetConversion(t *testing.T) {
	for _, c := range []struct {
		msb, lsb byte
		want     float64 // TMP102 datasheet table 7-? (12-bit): 0x190 = 25 °C, 0xE70 = -25 °C
	}{{0x19, 0x00, 25}, {0xE7, 0x00, -25}, {0x00, 0x10, 0.0625}} {
		ops := []i2ctest.IO{
			{Addr: 0x48, W: []byte{0x01}, R: []byte{0x60, 0xA0}}, // configuration: power-on default
			{Addr: 0x48, W: []byte{0x01, 0x60, 0xA0}},            // continuous, comparator, 4 Hz
			{Addr: 0x48, W: []byte{0x00}, R: []byte{c.msb, c.lsb}},
		}
		got := publishedI2C(t, DeviceConfig{Driver: "tmp102"}, ops, "temperature")
		near(t, "temperature °C", got["temperature"], c.want, 1e-6)
	}
}

func TestBH1750DatasheetExample(t *testing.T) {
	// BH1750FVI datasheet, "measurement sequence example": high resolution
	// mode, 0x8390 -> (2^15 + 2^9 + 2^8 + 2^7 + 2^4) / 1.2 = 28067 lx.
	ops := []i2ctest.IO{
		// periph's initialisation: it sends the reset opcode (0x07) where
		// the power-on opcode belongs, then continuous high resolution
		{Addr: 0x23, W: []byte{0x07}},
		{Addr: 0x23, W: []byte{0x10}},
		{Addr: 0x23, W: []byte{0x07}},
		{Addr: 0x23, W: []byte{0x10}},
		{Addr: 0x23, W: []byte{0x10}, R: []byte{0x83, 0x90}},
		{Addr: 0x23, W: []byte{0x00}}, // power down on close
	}
	got := publishedI2C(t, DeviceConfig{Driver: "bh1750"}, ops, "illuminance")
	near(t, "illuminance lx", got["illuminance"], float64(1<<15+1<<9+1<<8+1<<7+1<<4)/1.2, 1e-3)
}

func TestINA219DatasheetCalibration(t *testing.T) {
	// INA219 datasheet 8.5.1: Current_LSB = max expected current / 2^15,
	// Cal = trunc(0.04096 / (Current_LSB * R_shunt)), Power_LSB = 20 *
	// Current_LSB; bus voltage LSB 4 mV (register bits 15-3), shunt 10 µV.
	const maxCurrent, shunt = 3.2, 0.1
	lsb := maxCurrent / 32768
	cal := uint16(0.04096 / (lsb * shunt))
	const shuntReg, busReg, curReg, powReg = 4000, 3000<<3 | 0x2, 4095, 2457
	ops := []i2ctest.IO{
		{Addr: 0x40, W: []byte{0x05, byte(cal >> 8), byte(cal)}},
		{Addr: 0x40, W: []byte{0x00, 0x1F, 0xFF}}, // 32 V, ±320 mV, 12-bit x128 averaging, continuous
		{Addr: 0x40, W: []byte{0x01}, R: []byte{shuntReg >> 8, shuntReg & 0xFF}},
		{Addr: 0x40, W: []byte{0x02}, R: []byte{busReg >> 8, busReg & 0xFF}},
		{Addr: 0x40, W: []byte{0x04}, R: []byte{curReg >> 8, curReg & 0xFF}},
		{Addr: 0x40, W: []byte{0x03}, R: []byte{powReg >> 8, powReg & 0xFF}},
	}
	if cal != 4194 {
		t.Fatalf("calibration %d, want 4194 (0x1062)", cal)
	}
	got := publishedI2C(t, DeviceConfig{Driver: "ina219", Shunt: shunt, MaxCurrent: maxCurrent}, ops, "voltage", "shunt_voltage", "current", "power")
	near(t, "voltage V", got["voltage"], float64(busReg>>3)*0.004, 1e-6)
	near(t, "shunt mV", got["shunt_voltage"], shuntReg*0.01, 1e-6)
	near(t, "current A", got["current"], curReg*lsb, 1e-5)
	near(t, "power W", got["power"], powReg*20*lsb, 1e-4)
}

func TestADS1115SingleShotConversions(t *testing.T) {
	// ADS1115 datasheet 9.6.3: config = OS 1 | MUX | PGA | MODE 1 (single
	// shot) | DR 100 (128 SPS) | COMP_QUE 11; result LSB = FSR / 2^15.
	const pga2048 = 0b010
	cfgWord := func(mux uint16) []byte {
		w := 1<<15 | mux<<12 | pga2048<<9 | 1<<8 | 0b100<<5 | 0b11
		return []byte{0x01, byte(w >> 8), byte(w)}
	}
	ops := []i2ctest.IO{
		{Addr: 0x48, W: cfgWord(0b100)}, // AIN0 to GND
		{Addr: 0x48, W: []byte{0x00}, R: []byte{0x40, 0x00}},
		{Addr: 0x48, W: cfgWord(0b000)}, // AIN0 - AIN1
		{Addr: 0x48, W: []byte{0x00}, R: []byte{0xC0, 0x00}},
	}
	got := publishedI2C(t, DeviceConfig{Driver: "ads1115", Gain: 2.048, Inputs: []string{"a0", "a0-a1"}}, ops, "a0", "a0-a1")
	near(t, "a0 V", got["a0"], 16384*2.048/32768, 1e-6)
	near(t, "a0-a1 V", got["a0-a1"], -16384*2.048/32768, 1e-6)
}

func TestSCD4xDatasheetExample(t *testing.T) {
	// SCD4x datasheet 3.6.2 (read_measurement example): 0x01f4, 0x6667,
	// 0x5eb9 -> 500 ppm, 25.0 °C, 37.0 %RH; CO2 = word, T = -45 + 175 *
	// word / (2^16 - 1), RH = 100 * word / (2^16 - 1).
	w := func(v uint16) []byte { return []byte{byte(v >> 8), byte(v), crc8(byte(v>>8), byte(v))} }
	meas := append(append(w(0x01f4), w(0x6667)...), w(0x5eb9)...)
	ops := []i2ctest.IO{
		{Addr: 0x62, W: []byte{0x36, 0xf6}},               // wake_up
		{Addr: 0x62, W: []byte{0x21, 0xb1}},               // start_periodic_measurement
		{Addr: 0x62, W: []byte{0xe4, 0xb8}, R: w(0x8006)}, // get_data_ready_status: ready
		{Addr: 0x62, W: []byte{0xec, 0x05}, R: meas},      // read_measurement
		{Addr: 0x62, W: []byte{0x3f, 0x86}},               // stop_periodic_measurement on close
	}
	got := publishedI2C(t, DeviceConfig{Driver: "scd4x"}, ops, "co2", "temperature", "humidity")
	near(t, "co2 ppm", got["co2"], 500, 0)
	near(t, "temperature °C", got["temperature"], -45+175*float64(0x6667)/65535, 1e-4)
	near(t, "humidity %", got["humidity"], 100*float64(0x5eb9)/65535, 1e-4)
	near(t, "temperature rounded", math.Round(got["temperature"]*10)/10, 25.0, 0)
	near(t, "humidity rounded", math.Round(got["humidity"]*10)/10, 37.0, 0)
}
