// Package wire is the benchmark's minimal MQTT 3.1.1 codec: just the packets
// a load generator and a zero-logic forwarder need (CONNECT, CONNACK,
// SUBSCRIBE, SUBACK, PUBLISH, PUBACK, DISCONNECT), encoded by appending to a
// caller's buffer so the hot path allocates nothing. It never validates more
// than it must to frame packets: it is a measuring tool, not a broker.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
)

// Packet types (high nibble of the first byte).
const (
	CONNECT    = 1
	CONNACK    = 2
	PUBLISH    = 3
	PUBACK     = 4
	SUBSCRIBE  = 8
	SUBACK     = 9
	PINGREQ    = 12
	PINGRESP   = 13
	DISCONNECT = 14
)

// AppendLength appends n as an MQTT variable byte integer.
func AppendLength(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// AppendConnect appends a 3.1.1 CONNECT with keepalive 0 (no pings needed).
func AppendConnect(b []byte, clientID string, clean bool) []byte {
	flags := byte(0)
	if clean {
		flags = 0x02
	}
	rem := 10 + 2 + len(clientID)
	b = append(b, CONNECT<<4)
	b = AppendLength(b, rem)
	b = append(b, 0, 4, 'M', 'Q', 'T', 'T', 4, flags, 0, 0)
	return appendString(b, clientID)
}

// Sub is one topic filter in a SUBSCRIBE.
type Sub struct {
	Filter string
	QoS    byte
}

// AppendSubscribe appends a SUBSCRIBE with packet identifier id.
func AppendSubscribe(b []byte, id uint16, subs []Sub) []byte {
	rem := 2
	for _, s := range subs {
		rem += 2 + len(s.Filter) + 1
	}
	b = append(b, SUBSCRIBE<<4|0x02)
	b = AppendLength(b, rem)
	b = binary.BigEndian.AppendUint16(b, id)
	for _, s := range subs {
		b = appendString(b, s.Filter)
		b = append(b, s.QoS)
	}
	return b
}

// AppendPublish appends a PUBLISH; id is ignored for QoS 0.
func AppendPublish(b []byte, topic string, qos byte, id uint16, payload []byte) []byte {
	rem := 2 + len(topic) + len(payload)
	if qos > 0 {
		rem += 2
	}
	b = append(b, PUBLISH<<4|qos<<1)
	b = AppendLength(b, rem)
	b = appendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, id)
	}
	return append(b, payload...)
}

// AppendPuback appends a PUBACK for id.
func AppendPuback(b []byte, id uint16) []byte {
	return append(b, PUBACK<<4, 2, byte(id>>8), byte(id))
}

// AppendConnack appends a 3.1.1 CONNACK accepting the connection.
func AppendConnack(b []byte) []byte { return append(b, CONNACK<<4, 2, 0, 0) }

// AppendSuback appends a SUBACK granting qos for each of n filters.
func AppendSuback(b []byte, id uint16, granted []byte) []byte {
	b = append(b, SUBACK<<4)
	b = AppendLength(b, 2+len(granted))
	b = binary.BigEndian.AppendUint16(b, id)
	return append(b, granted...)
}

// Disconnect is a complete DISCONNECT packet.
var Disconnect = []byte{DISCONNECT << 4, 0}

// ErrMalformed is returned for a packet that cannot be framed.
var ErrMalformed = errors.New("wire: malformed packet")

// Reader frames packets from a buffered stream without copying.
type Reader struct {
	R *bufio.Reader
}

// Next returns the first byte and the body of the next packet. The body
// aliases the reader's buffer and is valid until the next call; bodies larger
// than the buffer are an error. Release must be called after use.
func (r Reader) Next() (first byte, body []byte, n int, err error) {
	hdr, err := r.R.Peek(2)
	if err != nil {
		return 0, nil, 0, err
	}
	first = hdr[0]
	rem, mult, i := 0, 1, 1
	for {
		if i > 4 {
			return 0, nil, 0, ErrMalformed
		}
		hdr, err = r.R.Peek(i + 1)
		if err != nil {
			return 0, nil, 0, err
		}
		d := hdr[i]
		rem += int(d&0x7f) * mult
		mult *= 128
		i++
		if d&0x80 == 0 {
			break
		}
	}
	total := i + rem
	if total > r.R.Size() {
		return 0, nil, 0, fmt.Errorf("wire: packet of %d bytes exceeds buffer of %d", total, r.R.Size())
	}
	buf, err := r.R.Peek(total)
	if err != nil {
		return 0, nil, 0, err
	}
	return first, buf[i:], total, nil
}

// Release discards n bytes returned by Next.
func (r Reader) Release(n int) { _, _ = r.R.Discard(n) }

// ParsePublish splits a PUBLISH body.
func ParsePublish(first byte, body []byte) (topic []byte, id uint16, payload []byte, err error) {
	if len(body) < 2 {
		return nil, 0, nil, ErrMalformed
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl {
		return nil, 0, nil, ErrMalformed
	}
	topic = body[2 : 2+tl]
	rest := body[2+tl:]
	if (first>>1)&3 > 0 {
		if len(rest) < 2 {
			return nil, 0, nil, ErrMalformed
		}
		id = binary.BigEndian.Uint16(rest)
		rest = rest[2:]
	}
	return topic, id, rest, nil
}
