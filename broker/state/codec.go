package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The on-disk encoding of a Batch. It is compact because every byte of it is
// written to an SD card: integers are varints, empty optional fields cost one
// flag bit, and a batch is just a count of operations followed by them:
//
//	batch = uvarint(nops) op*
//	op    = kind(1) fields...
//
// Fields per kind are in appendOp. Strings and byte slices are uvarint length
// then bytes; times are varint Unix nanoseconds with 0 for the zero time.

// Internal operation kinds, written only into snapshots.
const (
	opNextID  OpKind = 0x40 // uvarint: first message id not yet used
	opSnapEnd OpKind = 0x41 // marks a complete snapshot
)

var errCorrupt = errors.New("corrupt record")

// Message flag bits.
const (
	mfQoS     = 0x03
	mfRetain  = 0x04
	mfFormat  = 0x08 // HasFormat, PayloadFormat follows
	mfProps   = 0x10 // ContentType, ResponseTopic, CorrelationData, User follow
	mfExpiry  = 0x20
	mfOrigin  = 0x40
	mfCreated = 0x80
)

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

// appendBatch appends the encoding of b. It also returns how many bytes of
// live state the batch may add (used for the quota) and how many messages it
// stores.
func appendBatch(dst []byte, b *Batch) (out []byte, grow int64, msgs int, err error) {
	dst = appendUvarint(dst, uint64(len(b.Ops)))
	for i := range b.Ops {
		op := &b.Ops[i]
		start := len(dst)
		dst, err = appendOp(dst, op)
		if err != nil {
			return dst, 0, 0, fmt.Errorf("state: op %d (kind %d): %w", i, op.Kind, err)
		}
		switch op.Kind {
		case OpPutSession, OpPutMessage, OpSetRetained, OpEnqueue, OpPutInbound, OpPutWill:
			grow += int64(len(dst) - start)
		}
		if op.Kind == OpPutMessage {
			msgs++
		}
	}
	return dst, grow, msgs, nil
}

func appendOp(b []byte, op *Op) ([]byte, error) {
	b = append(b, byte(op.Kind))
	switch op.Kind {
	case OpPutSession:
		if op.Session == nil {
			return b, errors.New("nil Session")
		}
		b = appendSession(b, op.Session)
	case OpDeleteSession, OpDeleteWill:
		b = appendString(b, op.ClientID)
	case OpPutMessage:
		if op.Message == nil {
			return b, errors.New("nil Message")
		}
		b = appendMessage(b, op.Message)
	case OpSetRetained:
		b = appendString(b, op.Topic)
		b = appendUvarint(b, op.MessageID)
	case OpClearRetained:
		b = appendString(b, op.Topic)
	case OpEnqueue:
		if op.Outbound == nil {
			return b, errors.New("nil Outbound")
		}
		b = appendString(b, op.ClientID)
		b = appendOutbound(b, op.Outbound)
	case OpUpdateOutbound:
		if op.Outbound == nil {
			return b, errors.New("nil Outbound")
		}
		b = appendString(b, op.ClientID)
		b = appendUvarint(b, op.Outbound.Seq)
		b = append(b, byte(op.Outbound.Phase))
		b = appendUvarint(b, uint64(op.Outbound.PacketID))
	case OpDequeue:
		b = appendString(b, op.ClientID)
		b = appendUvarint(b, op.Seq)
	case OpPutInbound, OpDeleteInbound:
		b = appendString(b, op.ClientID)
		b = appendUvarint(b, uint64(op.PacketID))
	case OpPutWill:
		if op.Will == nil {
			return b, errors.New("nil Will")
		}
		b = appendString(b, op.Will.ClientID)
		b = appendTime(b, op.Will.Due)
		b = appendMessage(b, &op.Will.Message)
	default:
		return b, errors.New("unknown kind")
	}
	return b, nil
}

func appendSession(b []byte, s *Session) []byte {
	b = appendString(b, s.ClientID)
	b = append(b, s.Version)
	b = appendUvarint(b, uint64(s.ExpiryInterval))
	b = appendTime(b, s.DisconnectedAt)
	b = appendUvarint(b, uint64(len(s.Subscriptions)))
	for i := range s.Subscriptions {
		sub := &s.Subscriptions[i]
		b = appendString(b, sub.Filter)
		f := sub.QoS&3 | (sub.RetainHandling&3)<<4
		if sub.NoLocal {
			f |= 0x04
		}
		if sub.RetainAsPublished {
			f |= 0x08
		}
		b = append(b, f)
		b = appendUvarint(b, uint64(sub.ID))
	}
	return b
}

func appendMessage(b []byte, m *Message) []byte {
	b = appendUvarint(b, m.ID)
	b = appendString(b, m.Topic)
	b = appendBytes(b, m.Payload)
	f := m.QoS & mfQoS
	if m.Retain {
		f |= mfRetain
	}
	if m.HasFormat {
		f |= mfFormat
	}
	props := m.ContentType != "" || m.ResponseTopic != "" || m.CorrelationData != nil || len(m.User) > 0
	if props {
		f |= mfProps
	}
	if !m.Expiry.IsZero() {
		f |= mfExpiry
	}
	if m.Origin != "" {
		f |= mfOrigin
	}
	if !m.Created.IsZero() {
		f |= mfCreated
	}
	b = append(b, f)
	if m.HasFormat {
		b = append(b, m.PayloadFormat)
	}
	if props {
		b = appendString(b, m.ContentType)
		b = appendString(b, m.ResponseTopic)
		if m.CorrelationData == nil {
			b = append(b, 0)
		} else {
			b = append(b, 1)
			b = appendBytes(b, m.CorrelationData)
		}
		b = appendUvarint(b, uint64(len(m.User)))
		for _, u := range m.User {
			b = appendString(b, u.Key)
			b = appendString(b, u.Value)
		}
	}
	if !m.Expiry.IsZero() {
		b = appendTime(b, m.Expiry)
	}
	if m.Origin != "" {
		b = appendString(b, m.Origin)
	}
	if !m.Created.IsZero() {
		b = appendTime(b, m.Created)
	}
	return b
}

func appendOutbound(b []byte, o *Outbound) []byte {
	b = appendUvarint(b, o.Seq)
	b = appendUvarint(b, o.MessageID)
	f := o.QoS&3 | (byte(o.Phase)&3)<<3
	if o.RetainFlag {
		f |= 0x04
	}
	b = append(b, f)
	b = appendUvarint(b, uint64(o.PacketID))
	b = appendUvarint(b, uint64(len(o.SubIDs)))
	for _, id := range o.SubIDs {
		b = appendUvarint(b, uint64(id))
	}
	return b
}

// decoder reads the encoding above. Every read is bounds-checked: a record
// whose CRC matches is still never trusted to be well formed.
type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
}

func (d *decoder) done() bool { return d.err != nil || d.off >= len(d.b) }

func (d *decoder) byte1() byte {
	if d.err != nil || d.off >= len(d.b) {
		d.fail()
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		d.fail()
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u32() uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail()
	}
	return uint32(v)
}

func (d *decoder) u16() uint16 {
	v := d.uvarint()
	if v > math.MaxUint16 {
		d.fail()
	}
	return uint16(v)
}

func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail()
		return nil
	}
	p := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	return p
}

func (d *decoder) str() string { return string(d.raw()) }

// bytes returns a copy (never an alias of the read buffer); empty is non-nil.
func (d *decoder) bytes() []byte {
	p := d.raw()
	if d.err != nil {
		return nil
	}
	return append(make([]byte, 0, len(p)), p...)
}

func (d *decoder) time() time.Time {
	n := d.varint()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// skipString advances past a string without allocating and returns it as an
// alias of the buffer, valid only until the buffer is reused.
func (d *decoder) skipString() []byte { return d.raw() }

func (d *decoder) session() *Session {
	s := &Session{
		ClientID:       d.str(),
		Version:        d.byte1(),
		ExpiryInterval: d.u32(),
		DisconnectedAt: d.time(),
	}
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
	}
	if d.err != nil {
		return nil
	}
	if n > 0 {
		s.Subscriptions = make([]Subscription, 0, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		sub := Subscription{Filter: d.str()}
		f := d.byte1()
		sub.QoS = f & 3
		sub.NoLocal = f&0x04 != 0
		sub.RetainAsPublished = f&0x08 != 0
		sub.RetainHandling = f >> 4 & 3
		sub.ID = d.u32()
		s.Subscriptions = append(s.Subscriptions, sub)
	}
	return s
}

func (d *decoder) message(m *Message) {
	m.ID = d.uvarint()
	m.Topic = d.str()
	m.Payload = d.bytes()
	f := d.byte1()
	m.QoS = f & mfQoS
	m.Retain = f&mfRetain != 0
	if f&mfFormat != 0 {
		m.HasFormat = true
		m.PayloadFormat = d.byte1()
	}
	if f&mfProps != 0 {
		m.ContentType = d.str()
		m.ResponseTopic = d.str()
		if d.byte1() == 1 {
			m.CorrelationData = d.bytes()
		}
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			d.fail()
		}
		for i := uint64(0); i < n && d.err == nil; i++ {
			m.User = append(m.User, UserProperty{Key: d.str(), Value: d.str()})
		}
	}
	if f&mfExpiry != 0 {
		m.Expiry = d.time()
	}
	if f&mfOrigin != 0 {
		m.Origin = d.str()
	}
	if f&mfCreated != 0 {
		m.Created = d.time()
	}
}

func (d *decoder) outbound() Outbound {
	o := Outbound{Seq: d.uvarint(), MessageID: d.uvarint()}
	f := d.byte1()
	o.QoS = f & 3
	o.RetainFlag = f&0x04 != 0
	o.Phase = Phase(f >> 3 & 3)
	o.PacketID = d.u16()
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		o.SubIDs = append(o.SubIDs, d.u32())
	}
	return o
}

// decodeOp decodes one operation fully (used for round trips and by tests).
func (d *decoder) op() Op {
	op := Op{Kind: OpKind(d.byte1())}
	switch op.Kind {
	case OpPutSession:
		op.Session = d.session()
		if op.Session != nil {
			op.ClientID = op.Session.ClientID
		}
	case OpDeleteSession, OpDeleteWill:
		op.ClientID = d.str()
	case OpPutMessage:
		op.Message = new(Message)
		d.message(op.Message)
		op.MessageID = op.Message.ID
	case OpSetRetained:
		op.Topic = d.str()
		op.MessageID = d.uvarint()
	case OpClearRetained:
		op.Topic = d.str()
	case OpEnqueue:
		op.ClientID = d.str()
		o := d.outbound()
		op.Outbound = &o
		op.Seq, op.MessageID = o.Seq, o.MessageID
	case OpUpdateOutbound:
		op.ClientID = d.str()
		o := Outbound{Seq: d.uvarint(), Phase: Phase(d.byte1())}
		o.PacketID = d.u16()
		op.Outbound = &o
		op.Seq = o.Seq
	case OpDequeue:
		op.ClientID = d.str()
		op.Seq = d.uvarint()
	case OpPutInbound, OpDeleteInbound:
		op.ClientID = d.str()
		op.PacketID = d.u16()
	case OpPutWill:
		w := &Will{ClientID: d.str(), Due: d.time()}
		d.message(&w.Message)
		op.Will = w
		op.ClientID = w.ClientID
	case opNextID:
		op.MessageID = d.uvarint()
	case opSnapEnd:
	default:
		d.fail()
	}
	return op
}
