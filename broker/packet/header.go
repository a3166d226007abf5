package packet

// DecodeFixedHeader parses the fixed header at the start of b and returns it
// with its length in bytes. n == 0 with a nil error means b does not yet hold a
// whole fixed header: read more bytes and call again.
//
// It rejects the reserved packet type 0, fixed-header flags that are wrong for
// the type, and a remaining length longer than four bytes. A remaining length
// in a non-minimal encoding is accepted, as the specifications do not forbid it.
func DecodeFixedHeader(b []byte) (h FixedHeader, n int, err error) {
	if len(b) == 0 {
		return h, 0, nil
	}
	h.Type = Type(b[0] >> 4)
	h.Flags = b[0] & 0x0f
	if err := checkFlags(h.Type, h.Flags); err != nil {
		return FixedHeader{}, 0, err
	}
	rem, vn, err := decodeVarInt(b[1:])
	if err != nil || vn == 0 {
		return FixedHeader{}, 0, err
	}
	h.Remaining = rem
	return h, 1 + vn, nil
}

// HeaderLen is the length of the encoded fixed header for a packet whose
// remaining length is remaining.
func HeaderLen(remaining int) int { return 1 + varIntLen(remaining) }

// checkFlags enforces the fixed-header flag bits of MQTT 3.1.1 section 2.2.2
// and MQTT 5.0 section 2.1.3.
func checkFlags(t Type, flags byte) error {
	switch t {
	case Reserved:
		return malformed("(MQTT 5.0 2.1.2) packet type 0 is reserved")
	case PUBLISH:
		if flags&0x06 == 0x06 {
			return malformed("[MQTT-3.3.1-4] PUBLISH QoS 3 (both QoS bits set)")
		}
	case PUBREL:
		if flags != 0x02 {
			return malformed("[MQTT-3.6.1-1] PUBREL fixed header flags must be 0010, got " + flagBits(flags))
		}
	case SUBSCRIBE:
		if flags != 0x02 {
			return malformed("[MQTT-3.8.1-1] SUBSCRIBE fixed header flags must be 0010, got " + flagBits(flags))
		}
	case UNSUBSCRIBE:
		if flags != 0x02 {
			return malformed("[MQTT-3.10.1-1] UNSUBSCRIBE fixed header flags must be 0010, got " + flagBits(flags))
		}
	default:
		if flags != 0 {
			return malformed("[MQTT-2.2.2-2] (5.0 [MQTT-2.1.3-1]) " + t.String() + " fixed header flags must be 0000, got " + flagBits(flags))
		}
	}
	return nil
}

func flagBits(f byte) string {
	b := []byte("0000")
	for i := 0; i < 4; i++ {
		if f&(8>>i) != 0 {
			b[i] = '1'
		}
	}
	return string(b)
}
