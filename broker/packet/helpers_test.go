package packet

import (
	"reflect"
)

// decodeAll runs DecodeFixedHeader and Decode over one whole packet in b.
func decodeAll(d *Decoder, b []byte) (Packet, error) {
	h, n, err := DecodeFixedHeader(b)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, &Error{MalformedPacket, "test: incomplete fixed header"}
	}
	if len(b)-n < h.Remaining {
		return nil, &Error{MalformedPacket, "test: incomplete body"}
	}
	if len(b)-n > h.Remaining {
		return nil, &Error{MalformedPacket, "test: bytes after the packet"}
	}
	return d.Decode(h, b[n:])
}

// normalize makes nil and empty slices compare equal where the wire format
// cannot tell them apart. String and binary properties keep the difference:
// there nil means absent and empty means present with no bytes.
func normalize(p Packet) Packet {
	nb := func(b *[]byte) {
		if len(*b) == 0 {
			*b = nil
		}
	}
	np := func(pr *Properties) {
		if len(pr.User) == 0 {
			pr.User = nil
		}
		if len(pr.SubscriptionIDs) == 0 {
			pr.SubscriptionIDs = nil
		}
		pr.Present &= scalarMask
	}
	switch p := p.(type) {
	case *Connect:
		c := *p
		nb(&c.ProtocolName)
		nb(&c.ClientID)
		nb(&c.WillTopic)
		nb(&c.WillPayload)
		nb(&c.Username)
		nb(&c.Password)
		np(&c.Props)
		np(&c.WillProps)
		return &c
	case *Connack:
		c := *p
		np(&c.Props)
		return &c
	case *Publish:
		c := *p
		nb(&c.Topic)
		nb(&c.Payload)
		np(&c.Props)
		return &c
	case *Ack:
		c := *p
		np(&c.Props)
		return &c
	case *Subscribe:
		c := *p
		np(&c.Props)
		c.Subscriptions = append([]Subscription(nil), c.Subscriptions...)
		return &c
	case *Suback:
		c := *p
		np(&c.Props)
		c.Reasons = append([]ReasonCode(nil), c.Reasons...)
		return &c
	case *Unsubscribe:
		c := *p
		np(&c.Props)
		c.Filters = append([][]byte(nil), c.Filters...)
		return &c
	case *Unsuback:
		c := *p
		np(&c.Props)
		if len(c.Reasons) == 0 {
			c.Reasons = nil
		} else {
			c.Reasons = append([]ReasonCode(nil), c.Reasons...)
		}
		return &c
	case *Disconnect:
		c := *p
		np(&c.Props)
		return &c
	case *Auth:
		c := *p
		np(&c.Props)
		return &c
	}
	return p
}

// fatalHelper is what testing.TB and *rapid.T have in common.
type fatalHelper interface {
	Helper()
	Fatalf(format string, args ...any)
}

func samePacket(t fatalHelper, got, want Packet) {
	t.Helper()
	g, w := normalize(got), normalize(want)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("packet mismatch\n got: %#v\nwant: %#v", g, w)
	}
}

// cat joins byte slices.
func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// str is a two-byte-length-prefixed string.
func str(s string) []byte { return appendBytes(nil, []byte(s)) }

// pkt prefixes body with the fixed header byte b0 and its remaining length.
func pkt(b0 byte, body ...[]byte) []byte {
	b := cat(body...)
	return cat([]byte{b0}, AppendVarInt(nil, len(b)), b)
}

func bs(b ...byte) []byte { return b }
