package drivers

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// modbusCRC is the Modbus RTU CRC-16 (polynomial 0xA001, initial 0xFFFF),
// sent low byte first.
func modbusCRC(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

// modbusSlaveImage is what one simulated slave holds.
type modbusSlaveImage struct {
	holding  map[uint16]uint16
	input    map[uint16]uint16
	coils    map[uint16]bool
	discrete map[uint16]bool
}

// modbusResponder plays the slaves on the master side of a pty: it reads
// request frames (8 bytes for functions 1-4), checks their CRC and answers
// for the slaves it has. A slave id it does not have never answers, like a
// device that is powered off.
type modbusResponder struct {
	master *os.File
	slaves map[uint8]*modbusSlaveImage
	done   chan struct{}

	mu       sync.Mutex
	requests map[uint8]int // frames received per slave id
	badCRC   int
}

func startModbusResponder(t *testing.T, slaves map[uint8]*modbusSlaveImage) (path string, r *modbusResponder) {
	t.Helper()
	ptmx, slave, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	// A non-blocking copy of the master goes through Go's poller, so that
	// closing it ends a Read in progress.
	fd, err := syscall.Dup(int(ptmx.Fd()))
	ptmx.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	master := os.NewFile(uintptr(fd), "ptmx")
	r = &modbusResponder{master: master, slaves: slaves, done: make(chan struct{}), requests: map[uint8]int{}}
	go r.serve()
	t.Cleanup(func() {
		slave.Close()
		master.Close()
		<-r.done
	})
	// The test keeps its slave descriptor open so that the driver closing
	// and reopening the port does not hang up the line.
	return slave.Name(), r
}

func (r *modbusResponder) serve() {
	defer close(r.done)
	req := make([]byte, 8)
	for {
		if _, err := io.ReadFull(r.master, req); err != nil {
			return
		}
		if binary.LittleEndian.Uint16(req[6:]) != modbusCRC(req[:6]) {
			r.mu.Lock()
			r.badCRC++
			r.mu.Unlock()
			continue
		}
		id, fc := req[0], req[1]
		addr, qty := binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])
		r.mu.Lock()
		r.requests[id]++
		r.mu.Unlock()
		s, ok := r.slaves[id]
		if !ok {
			continue
		}
		resp := []byte{id, fc}
		switch fc {
		case 3, 4:
			regs := s.holding
			if fc == 4 {
				regs = s.input
			}
			data := make([]byte, 0, 2*qty)
			for a := addr; a < addr+qty; a++ {
				v, ok := regs[a]
				if !ok {
					data = nil
					break
				}
				data = binary.BigEndian.AppendUint16(data, v)
			}
			if data == nil {
				resp = []byte{id, fc | 0x80, 0x02} // illegal data address
			} else {
				resp = append(resp, byte(len(data)))
				resp = append(resp, data...)
			}
		case 1, 2:
			bits := s.coils
			if fc == 2 {
				bits = s.discrete
			}
			data := make([]byte, (qty+7)/8)
			for i := uint16(0); i < qty; i++ {
				if bits[addr+i] {
					data[i/8] |= 1 << (i % 8)
				}
			}
			resp = append(resp, byte(len(data)))
			resp = append(resp, data...)
		default:
			resp = []byte{id, fc | 0x80, 0x01} // illegal function
		}
		resp = binary.LittleEndian.AppendUint16(resp, modbusCRC(resp))
		if _, err := r.master.Write(resp); err != nil {
			return
		}
	}
}

func (r *modbusResponder) requestsTo(id uint8) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests[id]
}

func f32regs(f float32) (hi, lo uint16) {
	b := math.Float32bits(f)
	return uint16(b >> 16), uint16(b)
}

func swap16(v uint16) uint16 { return v<<8 | v>>8 }

func TestModbusRTUOverPty(t *testing.T) {
	noLeaks(t)
	fhi, flo := f32regs(21.5)
	nhi, nlo := f32regs(-2.75)
	slave1 := &modbusSlaveImage{
		holding: map[uint16]uint16{
			0: 0xFB2E,            // int16 -1234
			1: 0x0001, 2: 0xE240, // uint32 123456, high word first
			3: 0xE240, 4: 0x0001, // uint32 123456, low word first
			5: fhi, 6: flo, // float32 21.5, ABCD
			7: swap16(flo), 8: swap16(fhi), // float32 21.5, DCBA
			9: swap16(nhi), 10: swap16(nlo), // float32 -2.75, BADC
			11: 0xFFFF, 12: 0xFFFE, // int32 -2
		},
		input:    map[uint16]uint16{0: 500},
		coils:    map[uint16]bool{0: true, 1: false},
		discrete: map[uint16]bool{3: false, 4: true},
	}
	slave3 := &modbusSlaveImage{input: map[uint16]uint16{10: 42}}
	path, resp := startModbusResponder(t, map[uint8]*modbusSlaveImage{1: slave1, 3: slave3})

	cfg := DeviceConfig{
		Name: "meter", Driver: "modbus-rtu", Port: path, Baud: 19200, Timeout: time.Second,
		Slaves: []ModbusSlave{
			{ID: 1, Registers: []ModbusRegister{
				{Name: "temperature", Address: 0, Format: "int16", Scale: 0.1},
				{Name: "count_abcd", Address: 1, Format: "uint32"},
				{Name: "count_cdab", Address: 3, Format: "uint32", WordOrder: "little"},
				{Name: "float_abcd", Address: 5, Format: "float32"},
				{Name: "float_dcba", Address: 7, Format: "float32", ByteOrder: "little", WordOrder: "little"},
				{Name: "float_badc", Address: 9, Format: "float32", ByteOrder: "little"},
				{Name: "signed32", Address: 11, Format: "int32", Scale: 0.5},
				{Name: "voltage", Address: 0, Type: "input", Scale: 0.01},
				{Name: "relay", Address: 0, Type: "coil"},
				{Name: "relay2", Address: 1, Type: "coil"},
				{Name: "door", Address: 3, Type: "discrete"},
				{Name: "alarm", Address: 4, Type: "discrete"},
			}},
			// Slave 2 is on the bus in the configuration, powered off in fact.
			{ID: 2, Registers: []ModbusRegister{
				{Name: "dead_a", Address: 0},
				{Name: "dead_b", Address: 1},
			}},
		},
		Registers: []ModbusRegister{
			{Name: "level", Slave: 3, Address: 10, Type: "input", Format: "int16"},
			{Name: "missing", Slave: 1, Address: 100}, // slave 1 answers with an exception
		},
	}
	dev := openTestDevice(t, cfg, nil)
	sensor := dev.(Sensor)

	for round := 1; round <= 2; round++ {
		rds, err := sensor.Read(context.Background())
		if err != nil {
			t.Fatalf("round %d: Read: %v", round, err)
		}
		got := map[string]Reading{}
		for _, rd := range rds {
			got[rd.Channel] = rd
		}
		wantValue(t, got, "temperature", -123.4)
		wantValue(t, got, "count_abcd", 123456)
		wantValue(t, got, "count_cdab", 123456)
		wantValue(t, got, "float_abcd", 21.5)
		wantValue(t, got, "float_dcba", 21.5)
		wantValue(t, got, "float_badc", -2.75)
		wantValue(t, got, "signed32", -1)
		wantValue(t, got, "voltage", 5)
		wantValue(t, got, "level", 42)
		wantText(t, got, "relay", "ON")
		wantText(t, got, "relay2", "OFF")
		wantText(t, got, "door", "OFF")
		wantText(t, got, "alarm", "ON")
		// dead_a failed, dead_b was skipped (its slave had just timed
		// out), missing got an exception: three per round.
		wantValue(t, got, "read_errors", float64(3*round))
		for _, ch := range []string{"dead_a", "dead_b", "missing"} {
			if rd, ok := got[ch]; ok {
				t.Errorf("%s published: %+v", ch, rd)
			}
		}
	}
	if n := resp.requestsTo(2); n != 2 {
		t.Errorf("slave 2 was asked %d times in two rounds, want once a round", n)
	}
	if n := dev.(*modbusRTU).ReadErrors(); n != 6 {
		t.Errorf("ReadErrors = %d, want 6", n)
	}
	resp.mu.Lock()
	if resp.badCRC != 0 {
		t.Errorf("%d requests with a bad CRC", resp.badCRC)
	}
	resp.mu.Unlock()
}

// A bus where no slave answers is a failed read, which the Runner counts
// and retries.
func TestModbusRTUNoAnswerIsAnError(t *testing.T) {
	noLeaks(t)
	path, _ := startModbusResponder(t, nil)
	dev := openTestDevice(t, DeviceConfig{
		Name: "m", Driver: "modbus-rtu", Port: path, Timeout: 100 * time.Millisecond,
		Registers: []ModbusRegister{{Name: "a", Slave: 5, Address: 0}},
	}, nil)
	rds, err := dev.(Sensor).Read(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no value read") {
		t.Fatalf("Read = %v, %v; want an error", rds, err)
	}
}

func TestModbusDecode(t *testing.T) {
	tests := []struct {
		name string
		reg  ModbusRegister
		raw  []byte
		want float64
	}{
		{"uint16", ModbusRegister{}, []byte{0x12, 0x34}, 0x1234},
		{"uint16 little", ModbusRegister{ByteOrder: "little"}, []byte{0x34, 0x12}, 0x1234},
		{"int16", ModbusRegister{Format: "int16"}, []byte{0xFF, 0xFE}, -2},
		{"int16 scaled", ModbusRegister{Format: "int16", Scale: 0.1}, []byte{0x00, 0xD7}, 21.5},
		{"uint32 ABCD", ModbusRegister{Format: "uint32"}, []byte{0x00, 0x01, 0xE2, 0x40}, 123456},
		{"uint32 CDAB", ModbusRegister{Format: "uint32", WordOrder: "low_first"}, []byte{0xE2, 0x40, 0x00, 0x01}, 123456},
		{"uint32 BADC", ModbusRegister{Format: "uint32", ByteOrder: "little"}, []byte{0x01, 0x00, 0x40, 0xE2}, 123456},
		{"uint32 DCBA", ModbusRegister{Format: "uint32", ByteOrder: "little", WordOrder: "little"}, []byte{0x40, 0xE2, 0x01, 0x00}, 123456},
		{"int32", ModbusRegister{Format: "int32"}, []byte{0xFF, 0xFF, 0xFF, 0x85}, -123},
		{"float32 ABCD", ModbusRegister{Format: "float32"}, []byte{0x41, 0xAC, 0x00, 0x00}, 21.5},
		{"float32 CDAB", ModbusRegister{Format: "float32", WordOrder: "little"}, []byte{0x00, 0x00, 0x41, 0xAC}, 21.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.reg.Name = "x"
			p, err := resolveModbusRegister(tt.reg, 1)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.decode(tt.raw)
			if err != nil || !approx(got, tt.want) {
				t.Errorf("decode(% x) = %v, %v; want %v", tt.raw, got, err, tt.want)
			}
		})
	}
	p, _ := resolveModbusRegister(ModbusRegister{Name: "x", Format: "float32"}, 1)
	if _, err := p.decode([]byte{0x7F, 0xC0, 0x00, 0x00}); err == nil {
		t.Error("a NaN float32 decoded without error")
	}
}

func TestModbusRTUConfigErrors(t *testing.T) {
	reg := []ModbusRegister{{Name: "a", Slave: 1}}
	tests := []struct {
		name string
		cfg  DeviceConfig
		want string
	}{
		{"no port", DeviceConfig{Registers: reg}, "port is required"},
		{"no registers", DeviceConfig{Port: "ttyUSB0"}, "no registers"},
		{"flat register without slave", DeviceConfig{Port: "ttyUSB0", Registers: []ModbusRegister{{Name: "a"}}}, "names its slave"},
		{"slave id 0", DeviceConfig{Port: "ttyUSB0", Slaves: []ModbusSlave{{ID: 0, Registers: reg}}}, "not within 1..247"},
		{"slave mismatch", DeviceConfig{Port: "ttyUSB0", Slaves: []ModbusSlave{{ID: 2, Registers: reg}}}, "under slave id 2"},
		{"bad format", DeviceConfig{Port: "ttyUSB0", Registers: []ModbusRegister{{Name: "a", Slave: 1, Format: "int64"}}}, "format"},
		{"bad type", DeviceConfig{Port: "ttyUSB0", Registers: []ModbusRegister{{Name: "a", Slave: 1, Type: "analog"}}}, "type"},
		{"word order on 16 bits", DeviceConfig{Port: "ttyUSB0", Registers: []ModbusRegister{{Name: "a", Slave: 1, WordOrder: "little"}}}, "32-bit"},
		{"scale on a coil", DeviceConfig{Port: "ttyUSB0", Registers: []ModbusRegister{{Name: "a", Slave: 1, Type: "coil", Scale: 2}}}, "for registers"},
		{"duplicate name", DeviceConfig{Port: "ttyUSB0", Registers: []ModbusRegister{{Name: "a", Slave: 1}, {Name: "a", Slave: 2}}}, "also"},
		{"parity", DeviceConfig{Port: "ttyUSB0", Registers: reg, Parity: "mark"}, "parity"},
		{"stop bits", DeviceConfig{Port: "ttyUSB0", Registers: reg, StopBits: 3}, "stop_bits"},
		{"32-bit past the end", DeviceConfig{Port: "ttyUSB0", Registers: []ModbusRegister{{Name: "a", Slave: 1, Address: 65535, Format: "float32"}}}, "65536"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Name, tt.cfg.Driver = "dev", "modbus-rtu"
			err := tt.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// The port cannot be opened: Open fails, and the Runner retries it.
func TestModbusRTUOpenFails(t *testing.T) {
	_, err := Open(DeviceConfig{Name: "m", Driver: "modbus-rtu", Port: "/nonexistent/tty", Registers: []ModbusRegister{{Name: "a", Slave: 1}}}, Env{Logger: testLogger(t)})
	if err == nil || errors.Is(err, context.Canceled) {
		t.Fatalf("Open = %v, want an error", err)
	}
}

func TestModbusRTUConfigFromYAML(t *testing.T) {
	cfg, err := load(t, `
devices:
  - name: meter
    driver: modbus-rtu
    port: ttyUSB0
    baud: 19200
    parity: even
    stop_bits: 1
    timeout: 250ms
    interval: 10s
    slaves:
      - id: 1
        registers:
          - {name: voltage, address: 0, type: input, format: float32, byte_order: big, word_order: little}
          - {name: energy, address: 0x100, format: uint32, scale: 0.01}
      - id: 2
        registers:
          - {name: relay, address: 3, type: coil}
    registers:
      - {name: flow, slave: 7, address: 12, format: int16, scale: 0.1}
`)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Devices[0]
	if d.Parity != "even" || d.StopBits != 1 || d.Timeout != 250*time.Millisecond || len(d.Slaves) != 2 || len(d.Registers) != 1 {
		t.Fatalf("device %+v", d)
	}
	if r := d.Slaves[0].Registers[0]; r.Type != "input" || r.Format != "float32" || r.WordOrder != "little" {
		t.Errorf("slaves[0].registers[0] = %+v", r)
	}
	if r := d.Slaves[0].Registers[1]; r.Address != 0x100 || r.Scale != 0.01 {
		t.Errorf("slaves[0].registers[1] = %+v", r)
	}
	if r := d.Registers[0]; r.Slave != 7 || r.Scale != 0.1 {
		t.Errorf("registers[0] = %+v", r)
	}
	set, err := modbusSettingsOf(&d)
	if err != nil || set.path != "/dev/ttyUSB0" || set.baud != 19200 {
		t.Errorf("settings %+v, %v", set, err)
	}

	_, err = load(t, `
devices:
  - name: meter
    driver: modbus-rtu
    port: ttyUSB0
    registers:
      - {name: flow, slave: 7, adress: 12}
`)
	if err == nil || !strings.Contains(err.Error(), "adress") {
		t.Errorf("a misspelt register key: %v", err)
	}
}

// Through the Runner and the broker: a slave that never answers costs only
// its own values; the device stays online and announces its channels.
func TestModbusRTUThroughRunner(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	sub := subscribe(t, b, "gatewayd/gw1/meter/#", "homeassistant/#")
	path, _ := startModbusResponder(t, map[uint8]*modbusSlaveImage{
		1: {holding: map[uint16]uint16{0: 0x00D7}, coils: map[uint16]bool{0: true}},
	})
	cfg := DefaultConfig()
	cfg.HomeAssistant.Enabled = true
	cfg.Devices = []DeviceConfig{{
		Name: "meter", Driver: "modbus-rtu", Port: path, Interval: time.Hour, Timeout: time.Second,
		Registers: []ModbusRegister{
			{Name: "temperature", Slave: 1, Address: 0, Format: "int16", Scale: 0.1},
			{Name: "pump", Slave: 1, Address: 0, Type: "coil"},
			{Name: "pressure", Slave: 9, Address: 0},
		},
	}}
	startRunner(t, b, cfg, nil)
	sub.expect(0, "gatewayd/gw1/meter/temperature", "21.5")
	sub.expect(0, "gatewayd/gw1/meter/pump", "ON")
	sub.expect(0, "gatewayd/gw1/meter/read_errors", "1")
	sub.expect(0, "gatewayd/gw1/meter/status", Online)

	m, _ := sub.next(0, "homeassistant/sensor/gw1/meter_temperature/config")
	c := decodeHA(t, m)
	check(t, "device_class", c.DeviceClass, "temperature")
	check(t, "unit_of_measurement", c.UnitOfMeasurement, "°C")
	m, _ = sub.next(0, "homeassistant/binary_sensor/gw1/meter_pump/config")
	c = decodeHA(t, m)
	check(t, "payload_on", c.PayloadOn, "ON")
	m, _ = sub.next(0, "homeassistant/sensor/gw1/meter_pressure/config")
	c = decodeHA(t, m)
	check(t, "pressure device_class", c.DeviceClass, "pressure")
	if got := sub.payloads("gatewayd/gw1/meter/pressure"); len(got) != 0 {
		t.Errorf("pressure published from a slave that never answered: %q", got)
	}
}
