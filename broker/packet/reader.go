package packet

// reader walks a packet body. Its methods fail with MalformedPacket when a
// field would run past the end of the packet: the remaining length then
// disagrees with the contents.
type reader struct {
	b []byte
	i int
}

func overrun(what string) error {
	return malformed("(MQTT 5.0 2.1.4) " + what + " overruns the packet (remaining length too short)")
}

func (r *reader) left() int { return len(r.b) - r.i }

func (r *reader) byte1(what string) (byte, error) {
	if r.i >= len(r.b) {
		return 0, overrun(what)
	}
	r.i++
	return r.b[r.i-1], nil
}

func (r *reader) uint16(what string) (uint16, error) {
	if len(r.b)-r.i < 2 {
		return 0, overrun(what)
	}
	v := uint16(r.b[r.i])<<8 | uint16(r.b[r.i+1])
	r.i += 2
	return v, nil
}

func (r *reader) uint32(what string) (uint32, error) {
	if len(r.b)-r.i < 4 {
		return 0, overrun(what)
	}
	b := r.b[r.i:]
	r.i += 4
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), nil
}

// bin reads two-byte-length-prefixed binary data. The result is never nil,
// so that an empty value stays distinguishable from an absent one.
func (r *reader) bin(what string) ([]byte, error) {
	n, err := r.uint16(what)
	if err != nil {
		return nil, err
	}
	if int(n) > len(r.b)-r.i {
		return nil, overrun(what)
	}
	s := r.b[r.i : r.i+int(n) : r.i+int(n)]
	r.i += int(n)
	return s, nil
}

// str reads a UTF-8 encoded string and checks it ([MQTT-1.5.4-1..2]).
func (r *reader) str(what string) ([]byte, error) {
	s, err := r.bin(what)
	if err != nil {
		return nil, err
	}
	if err := ValidUTF8(s); err != nil {
		return nil, malformed(what + ": " + err.(*Error).Rule)
	}
	return s, nil
}

// rest returns the unread bytes, capacity-limited so an append by a consumer
// cannot write into the caller's buffer.
func (r *reader) rest() []byte {
	s := r.b[r.i:len(r.b):len(r.b)]
	r.i = len(r.b)
	return s
}
