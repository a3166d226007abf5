package packet

// AppendVarInt appends n as an MQTT variable byte integer (1 to 4 bytes for
// 0..MaxRemainingLength). Callers keep n within that range; encoders check it
// before calling.
func AppendVarInt(dst []byte, n int) []byte {
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(dst, b)
		}
		dst = append(dst, b|0x80)
	}
}

// varIntLen is the number of bytes AppendVarInt writes for n.
func varIntLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	default:
		return 4
	}
}

// decodeVarInt reads a variable byte integer from the start of b. n == 0 with
// a nil error means b ends before the integer does.
func decodeVarInt(b []byte) (v, n int, err error) {
	mult := 0
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, nil
		}
		v |= int(b[i]&0x7f) << mult
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
		mult += 7
	}
	return 0, 0, malformed("(MQTT 5.0 1.5.5, 3.1.1 2.2.3) variable byte integer longer than 4 bytes")
}
