package drivers

// modbus-rtu: registers, coils and discrete inputs of one or more Modbus
// slaves sharing an RS-485 bus, polled every interval with
// github.com/simonvetter/modbus.
//
// That library opens the serial device itself, by path, so this driver does
// not go through Hardware.Serial: the port is a path (/dev/ttyUSB0), or a
// name under /dev (serial0), below Hardware.Root as board resolves it. A slave that does not answer, or answers with
// an exception, costs only its own values: the others are still published,
// and read_errors counts the values that could not be read.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/config"

	"github.com/simonvetter/modbus"
)

func init() {
	Register("modbus-rtu", openModbusRTU)
	RegisterCheck("modbus-rtu", checkModbusRTU)
}

// ModbusSlave is one slave of a modbus-rtu device's `slaves` list.
type ModbusSlave struct {
	// ID is the slave (unit) address, 1-247.
	ID int `yaml:"id"`
	// Registers are read from this slave; their slave key must be empty or
	// equal to ID.
	Registers []ModbusRegister `yaml:"registers"`
}

// ModbusRegister is one value read from a slave: a channel.
type ModbusRegister struct {
	// Name is the channel name.
	Name string `yaml:"name"`
	// Slave is the slave address, 1-247: required in the device's flat
	// `registers` list, implied under `slaves`.
	Slave int `yaml:"slave"`
	// Address is the protocol address, from 0 (register 40001 is holding
	// address 0).
	Address uint16 `yaml:"address"`
	// Type is holding (default, function 3), input (4), coil (1) or
	// discrete (2). Coils and discrete inputs publish ON or OFF.
	Type string `yaml:"type"`
	// Format is uint16 (default), int16, uint32, int32 or float32; 32-bit
	// formats take two registers.
	Format string `yaml:"format"`
	// ByteOrder is the order of the two bytes of each register: big (default,
	// as the Modbus specification says) or little.
	ByteOrder string `yaml:"byte_order"`
	// WordOrder is the order of the two registers of a 32-bit value: big
	// (default, high word first) or little (low word first).
	WordOrder string `yaml:"word_order"`
	// Scale multiplies the raw value (0.1 for a register in tenths). Zero: 1.
	Scale float64 `yaml:"scale"`
}

// DefaultModbusBaud is the baud rate of a modbus-rtu device without one:
// what most meters and sensors ship with.
const DefaultModbusBaud = 9600

// DefaultModbusTimeout is how long a slave has to answer one request.
const DefaultModbusTimeout = 500 * time.Millisecond

const (
	modbusHolding  = "holding"
	modbusInput    = "input"
	modbusCoil     = "coil"
	modbusDiscrete = "discrete"
)

// modbusPoint is a register with its slave and defaults resolved.
type modbusPoint struct {
	ModbusRegister
	slave     uint8
	words     int  // registers taken: 1 or 2
	byteSwap  bool // little byte order
	wordSwap  bool // low word first
	scale     float64
	isBoolean bool
}

// modbusPoints resolves the configured registers, grouped by slave in
// configuration order. Errors are keyed for the configuration file.
func modbusPoints(slaves []ModbusSlave, flat []ModbusRegister) ([]modbusPoint, error) {
	var (
		out  []modbusPoint
		errs []error
		seen = map[string]string{}
	)
	add := func(key string, r ModbusRegister, slave int) {
		p, err := resolveModbusRegister(r, slave)
		if err != nil {
			errs = append(errs, config.Errorf(key, "%v", err))
			return
		}
		if prev, dup := seen[r.Name]; dup {
			errs = append(errs, config.Errorf(key+".name", "channel %q is also %s", r.Name, prev))
			return
		}
		seen[r.Name] = key
		out = append(out, p)
	}
	for i, s := range slaves {
		key := fmt.Sprintf("slaves[%d]", i)
		if s.ID < 1 || s.ID > 247 {
			errs = append(errs, config.Errorf(key+".id", "slave id %d is not within 1..247", s.ID))
			continue
		}
		if len(s.Registers) == 0 {
			errs = append(errs, config.Errorf(key+".registers", "slave %d has no registers", s.ID))
		}
		for j, r := range s.Registers {
			rk := fmt.Sprintf("%s.registers[%d]", key, j)
			if r.Slave != 0 && r.Slave != s.ID {
				errs = append(errs, config.Errorf(rk+".slave", "slave %d under slave id %d", r.Slave, s.ID))
				continue
			}
			add(rk, r, s.ID)
		}
	}
	for i, r := range flat {
		key := fmt.Sprintf("registers[%d]", i)
		if r.Slave < 1 || r.Slave > 247 {
			errs = append(errs, config.Errorf(key+".slave", "slave %d is not within 1..247 (a register outside slaves names its slave)", r.Slave))
			continue
		}
		add(key, r, r.Slave)
	}
	if len(out) == 0 && len(errs) == 0 {
		errs = append(errs, config.Errorf("registers", "no registers: list them under slaves or registers"))
	}
	// Group by slave, keeping the configured order within a slave, so that a
	// slave that does not answer is skipped as a whole.
	order := map[uint8]int{}
	var groups [][]modbusPoint
	for _, p := range out {
		i, ok := order[p.slave]
		if !ok {
			i = len(groups)
			order[p.slave] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], p)
	}
	out = out[:0]
	for _, g := range groups {
		out = append(out, g...)
	}
	return out, errors.Join(errs...)
}

func resolveModbusRegister(r ModbusRegister, slave int) (modbusPoint, error) {
	p := modbusPoint{ModbusRegister: r, slave: uint8(slave), words: 1, scale: r.Scale}
	if err := checkChannelName(r.Name); err != nil {
		return p, fmt.Errorf("name %q: %v", r.Name, err)
	}
	if p.scale == 0 {
		p.scale = 1
	}
	switch strings.ToLower(r.Type) {
	case "", modbusHolding:
		p.Type = modbusHolding
	case modbusInput:
		p.Type = modbusInput
	case modbusCoil, "coils":
		p.Type, p.isBoolean = modbusCoil, true
	case modbusDiscrete, "discrete_input":
		p.Type, p.isBoolean = modbusDiscrete, true
	default:
		return p, fmt.Errorf("type %q is not holding, input, coil or discrete", r.Type)
	}
	if p.isBoolean {
		if r.Format != "" || r.ByteOrder != "" || r.WordOrder != "" || r.Scale != 0 {
			return p, fmt.Errorf("%s %q: format, byte_order, word_order and scale are for registers", p.Type, r.Name)
		}
		return p, nil
	}
	switch strings.ToLower(r.Format) {
	case "", "uint16":
		p.Format = "uint16"
	case "int16":
		p.Format = "int16"
	case "uint32", "int32", "float32":
		p.Format = strings.ToLower(r.Format)
		p.words = 2
	default:
		return p, fmt.Errorf("format %q is not int16, uint16, int32, uint32 or float32", r.Format)
	}
	switch strings.ToLower(r.ByteOrder) {
	case "", "big":
	case "little":
		p.byteSwap = true
	default:
		return p, fmt.Errorf("byte_order %q is not big or little", r.ByteOrder)
	}
	switch strings.ToLower(r.WordOrder) {
	case "", "big", "high_first":
	case "little", "low_first":
		p.wordSwap = true
	default:
		return p, fmt.Errorf("word_order %q is not big (high word first) or little (low word first)", r.WordOrder)
	}
	if p.words == 1 && p.wordSwap {
		return p, fmt.Errorf("word_order is for 32-bit formats, not %s", p.Format)
	}
	if uint32(r.Address)+uint32(p.words) > 0x10000 {
		return p, fmt.Errorf("address %d: a %s does not fit below 65536", r.Address, p.Format)
	}
	return p, nil
}

// decode turns the registers' bytes, as they came off the wire (big-endian
// registers, first register first), into the scaled value.
func (p *modbusPoint) decode(raw []byte) (float64, error) {
	if len(raw) != 2*p.words {
		return 0, fmt.Errorf("%d bytes for a %s", len(raw), p.Format)
	}
	b := make([]byte, len(raw))
	copy(b, raw)
	if p.byteSwap {
		for i := 0; i+1 < len(b); i += 2 {
			b[i], b[i+1] = b[i+1], b[i]
		}
	}
	if p.wordSwap {
		b[0], b[1], b[2], b[3] = b[2], b[3], b[0], b[1]
	}
	var v float64
	switch p.Format {
	case "uint16":
		v = float64(binary.BigEndian.Uint16(b))
	case "int16":
		v = float64(int16(binary.BigEndian.Uint16(b)))
	case "uint32":
		v = float64(binary.BigEndian.Uint32(b))
	case "int32":
		v = float64(int32(binary.BigEndian.Uint32(b)))
	case "float32":
		f := math.Float32frombits(binary.BigEndian.Uint32(b))
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return 0, fmt.Errorf("float32 %x is not a number", b)
		}
		v = float64(f)
	}
	return v * p.scale, nil
}

// modbusSettings are the serial line keys of a modbus-rtu device.
type modbusSettings struct {
	path     string
	baud     int
	parity   uint
	stopBits uint
	timeout  time.Duration
}

func modbusSettingsOf(cfg *DeviceConfig) (modbusSettings, error) {
	var errs []error
	s := modbusSettings{path: cfg.Port, baud: cfg.Baud, timeout: cfg.Timeout}
	if s.path == "" {
		errs = append(errs, config.Errorf("port", "port is required (/dev/ttyUSB0, ttyAMA0)"))
	} else if !strings.HasPrefix(s.path, "/") {
		s.path = "/dev/" + s.path
	}
	if s.baud == 0 {
		s.baud = DefaultModbusBaud
	}
	switch strings.ToLower(cfg.Parity) {
	case "", "none", "n":
		s.parity = modbus.PARITY_NONE
	case "even", "e":
		s.parity = modbus.PARITY_EVEN
	case "odd", "o":
		s.parity = modbus.PARITY_ODD
	default:
		errs = append(errs, config.Errorf("parity", "parity %q is not none, even or odd", cfg.Parity))
	}
	switch cfg.StopBits {
	case 0: // the library's default: 2 without parity, 1 with, as the specification says
	case 1, 2:
		s.stopBits = uint(cfg.StopBits)
	default:
		errs = append(errs, config.Errorf("stop_bits", "stop_bits %d is not 1 or 2", cfg.StopBits))
	}
	if s.timeout < 0 {
		errs = append(errs, config.Errorf("timeout", "timeout must not be negative"))
	} else if s.timeout == 0 {
		s.timeout = DefaultModbusTimeout
	}
	return s, errors.Join(errs...)
}

func checkModbusRTU(cfg *DeviceConfig) error {
	_, err1 := modbusSettingsOf(cfg)
	_, err2 := modbusPoints(cfg.Slaves, cfg.Registers)
	return errors.Join(err1, err2)
}

// modbusRTU is a modbus-rtu device.
type modbusRTU struct {
	set    modbusSettings
	points []modbusPoint
	log    *slog.Logger

	mu     sync.Mutex
	client *modbus.ModbusClient // nil after an I/O failure: reopened by the next Read

	readErrors atomic.Uint64
}

func openModbusRTU(cfg DeviceConfig, env Env) (Device, error) {
	set, err := modbusSettingsOf(&cfg)
	if err != nil {
		return nil, err
	}
	points, err := modbusPoints(cfg.Slaves, cfg.Registers)
	if err != nil {
		return nil, err
	}
	if env.Hardware != nil && env.Hardware.Root() != "" {
		// as board does for every serial port: the device tree may live
		// under another root
		set.path = filepath.Join(env.Hardware.Root(), set.path)
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &modbusRTU{set: set, points: points, log: log}
	if err := d.open(); err != nil {
		return nil, err
	}
	return d, nil
}

// open opens the serial port; d.mu is held or d is not shared yet.
func (d *modbusRTU) open() error {
	c, err := modbus.NewClient(&modbus.ClientConfiguration{
		URL:      "rtu://" + d.set.path,
		Speed:    uint(d.set.baud),
		Parity:   d.set.parity,
		StopBits: d.set.stopBits,
		Timeout:  d.set.timeout,
		Logger:   slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	})
	if err != nil {
		return fmt.Errorf("modbus-rtu: %s: %w", d.set.path, err)
	}
	if err := c.Open(); err != nil {
		return fmt.Errorf("modbus-rtu: open %s at %d baud: %w", d.set.path, d.set.baud, err)
	}
	d.client = c
	return nil
}

func (d *modbusRTU) Channels() []ChannelInfo {
	out := make([]ChannelInfo, 0, len(d.points)+1)
	for _, p := range d.points {
		in := channelMeta(p.Name)
		if p.isBoolean {
			in = ChannelInfo{Channel: p.Name, Component: ComponentBinarySensor, Precision: -1}
		}
		out = append(out, in)
	}
	return append(out, ChannelInfo{Channel: "read_errors", StateClass: "total_increasing", Component: ComponentSensor, Precision: 0})
}

func (d *modbusRTU) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		return nil
	}
	err := d.client.Close()
	d.client = nil
	return err
}

// ReadErrors counts the values that could not be read since the device was
// opened.
func (d *modbusRTU) ReadErrors() uint64 { return d.readErrors.Load() }

// Read polls every configured value. A slave that times out is not asked
// for its other values this round. Read fails only when no value at all
// could be read; otherwise the failures are logged and counted in
// read_errors.
func (d *modbusRTU) Read(ctx context.Context) ([]Reading, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		if err := d.open(); err != nil {
			return nil, err
		}
	}
	var (
		out   []Reading
		errs  []error
		dead  = map[uint8]error{}
		ioErr error
	)
	for i := range d.points {
		p := &d.points[i]
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err, ok := dead[p.slave]; ok {
			errs = append(errs, fmt.Errorf("slave %d %s: skipped: %w", p.slave, p.Name, err))
			continue
		}
		rd, err := d.readPoint(p)
		if err == nil {
			out = append(out, rd)
			continue
		}
		errs = append(errs, fmt.Errorf("slave %d %s (%s %d): %w", p.slave, p.Name, p.Type, p.Address, err))
		var merr modbus.Error
		switch {
		case errors.Is(err, modbus.ErrRequestTimedOut):
			dead[p.slave] = err
		case errors.As(err, &merr):
			// an exception or a garbled answer: the slave is there
		default:
			ioErr = err // the port itself failed
		}
		if ioErr != nil {
			break
		}
	}
	if ioErr != nil {
		d.client.Close()
		d.client = nil
		return nil, fmt.Errorf("modbus-rtu: %s: %w", d.set.path, ioErr)
	}
	if len(errs) > 0 {
		d.readErrors.Add(uint64(len(errs)))
		for _, err := range errs {
			d.log.Warn("modbus value not read", "err", err)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("modbus-rtu: %s: no value read: %w", d.set.path, errors.Join(errs...))
	}
	now := time.Now()
	for i := range out {
		out[i].Time = now
	}
	return append(out, Reading{Channel: "read_errors", Value: float64(d.readErrors.Load()), Time: now}), nil
}

func (d *modbusRTU) readPoint(p *modbusPoint) (Reading, error) {
	c := d.client
	if err := c.SetUnitId(p.slave); err != nil {
		return Reading{}, err
	}
	switch p.Type {
	case modbusCoil, modbusDiscrete:
		var on bool
		var err error
		if p.Type == modbusCoil {
			on, err = c.ReadCoil(p.Address)
		} else {
			on, err = c.ReadDiscreteInput(p.Address)
		}
		if err != nil {
			return Reading{}, err
		}
		state := "OFF"
		if on {
			state = "ON"
		}
		return Reading{Channel: p.Name, Text: state, IsText: true, Retain: true}, nil
	}
	kind := modbus.HOLDING_REGISTER
	if p.Type == modbusInput {
		kind = modbus.INPUT_REGISTER
	}
	raw, err := c.ReadRawBytes(p.Address, uint16(2*p.words), kind)
	if err != nil {
		return Reading{}, err
	}
	v, err := p.decode(raw)
	if err != nil {
		return Reading{}, err
	}
	return Reading{Channel: p.Name, Value: v, Unit: channelMeta(p.Name).Unit}, nil
}
