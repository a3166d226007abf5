package packet

import (
	"testing"
)

// benchPublish is a sensor reading as a gateway publishes it: MQTT 5.0 adds
// a message expiry, a content type and a user property.
func benchPublish(v Version) *Publish {
	p := &Publish{QoS: 1, PacketID: 42, Topic: []byte("site/7/sensors/bme280/temperature"),
		Payload: []byte(`{"t":21.53,"ts":1764115200}`)}
	if v == V5 {
		p.Props.Set(PropMessageExpiry)
		p.Props.MessageExpiry = 3600
		p.Props.ContentType = []byte("application/json")
		p.Props.User = []UserProperty{{Key: []byte("unit"), Value: []byte("C")}}
	}
	return p
}

func benchSubscribe(v Version) *Subscribe {
	p := &Subscribe{PacketID: 7, Subscriptions: []Subscription{
		{Filter: []byte("site/+/sensors/#"), QoS: 1},
		{Filter: []byte("cmd/gw-01/+"), QoS: 2},
		{Filter: []byte("$share/workers/jobs/#"), QoS: 1},
	}}
	if v == V5 {
		p.Props.SubscriptionIDs = []uint32{12}
		p.Props.User = []UserProperty{{Key: []byte("k"), Value: []byte("v")}}
	}
	return p
}

func benchAck(v Version) *Ack {
	p := &Ack{Kind: PUBACK, PacketID: 42}
	if v == V5 {
		p.Reason = NoMatchingSubscribers
	}
	return p
}

func mustAppend(t testing.TB, p Packet, v Version) []byte {
	t.Helper()
	b, err := Append(nil, p, v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func benchDecode(b *testing.B, p Packet, v Version) {
	wire := mustAppend(b, p, v)
	d := &Decoder{Version: v}
	h, n, err := DecodeFixedHeader(wire)
	if err != nil {
		b.Fatal(err)
	}
	body := wire[n:]
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Decode(h, body); err != nil {
			b.Fatal(err)
		}
	}
}

func benchEncode(b *testing.B, p Packet, v Version) {
	dst := make([]byte, 0, 512)
	b.SetBytes(int64(len(mustAppend(b, p, v))))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = Append(dst[:0], p, v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	b.Run("v3.1.1", func(b *testing.B) { benchDecode(b, benchPublish(V311), V311) })
	b.Run("v5-props", func(b *testing.B) { benchDecode(b, benchPublish(V5), V5) })
}

func BenchmarkEncodePublish(b *testing.B) {
	b.Run("v3.1.1", func(b *testing.B) { benchEncode(b, benchPublish(V311), V311) })
	b.Run("v5-props", func(b *testing.B) { benchEncode(b, benchPublish(V5), V5) })
}

func BenchmarkDecodeSubscribe(b *testing.B) {
	b.Run("v3.1.1", func(b *testing.B) { benchDecode(b, benchSubscribe(V311), V311) })
	b.Run("v5-props", func(b *testing.B) { benchDecode(b, benchSubscribe(V5), V5) })
}

func BenchmarkEncodeAck(b *testing.B) {
	b.Run("v3.1.1", func(b *testing.B) { benchEncode(b, benchAck(V311), V311) })
	b.Run("v5-reason", func(b *testing.B) { benchEncode(b, benchAck(V5), V5) })
}

// In the steady state decoding and encoding PUBLISH, PUBACK and SUBSCRIBE
// allocate nothing: the decoder reuses its structs and slices, the encoders
// append into the caller's buffer.
func TestSteadyStateAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	for _, v := range []Version{V311, V5} {
		for _, p := range []Packet{benchPublish(v), benchAck(v), benchSubscribe(v)} {
			wire := mustAppend(t, p, v)
			h, n, _ := DecodeFixedHeader(wire)
			d := &Decoder{Version: v}
			if a := testing.AllocsPerRun(100, func() {
				if _, err := d.Decode(h, wire[n:]); err != nil {
					t.Fatal(err)
				}
			}); a != 0 {
				t.Errorf("decoding %v at level %d: %v allocations per packet", p.Type(), v, a)
			}
			dst := make([]byte, 0, 512)
			if a := testing.AllocsPerRun(100, func() {
				var err error
				if dst, err = Append(dst[:0], p, v); err != nil {
					t.Fatal(err)
				}
			}); a != 0 {
				t.Errorf("encoding %v at level %d: %v allocations per packet", p.Type(), v, a)
			}
		}
	}
}
