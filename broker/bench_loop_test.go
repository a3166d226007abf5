package broker_test

import (
	"fmt"
	"io"
	"net"
	"testing"

	"gatewayd/broker"
	"gatewayd/internal/testbroker"
)

// BenchmarkQoS1FanInLoop measures what a paced QoS 1 fan-in costs the
// broker per message: 4 publishers and one QoS 1 subscriber on real loopback
// sockets served by the event loop, in lock step (each publisher sends one
// message and waits for its PUBACK; the subscriber acknowledges each
// PUBLISH), as sensors reporting at a fixed rate do. The clients reuse their
// buffers, so allocs/op is the broker's per message.
func BenchmarkQoS1FanInLoop(b *testing.B) {
	const pubs = 4
	srv := testbroker.Start(b, func(c *broker.Config, _ *broker.Options) {
		c.EventLoop = true
	})
	addr := testbroker.Addr(srv)
	dial := func(id string) net.Conn {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { nc.Close() })
		if _, err := nc.Write(connectPacket(connectSpec{Version: 4, ClientID: id, Clean: true})); err != nil {
			b.Fatal(err)
		}
		var ack [4]byte
		if _, err := io.ReadFull(nc, ack[:]); err != nil || ack[0] != 0x20 || ack[3] != 0 {
			b.Fatalf("%s: CONNACK % x, %v", id, ack, err)
		}
		return nc
	}
	sub := dial("sub")
	if _, err := sub.Write(subscribePacket(false, 1, nil, rawSub{Filter: "bench/+/value", Options: 1})); err != nil {
		b.Fatal(err)
	}
	var suback [5]byte
	if _, err := io.ReadFull(sub, suback[:]); err != nil || suback[0] != 0x90 || suback[4] != 1 {
		b.Fatalf("SUBACK % x, %v", suback, err)
	}
	conns := make([]net.Conn, pubs)
	msgs := make([][]byte, pubs)
	for i := range conns {
		conns[i] = dial(fmt.Sprintf("pub%d", i))
		msgs[i] = publishPacket(false, pubSpec{Topic: fmt.Sprintf("bench/s%d/value", i), QoS: 1, ID: 1, Payload: string(make([]byte, 64))})
	}
	size := len(msgs[0])
	in := make([]byte, pubs*size+64)
	var puback [4]byte
	acks := make([]byte, 0, 4*pubs)
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n += pubs {
		for i, c := range conns {
			id := uint16(n/pubs%65535 + 1)
			msgs[i][size-64-2], msgs[i][size-64-1] = byte(id>>8), byte(id)
			if _, err := c.Write(msgs[i]); err != nil {
				b.Fatal(err)
			}
		}
		// The subscriber gets the 4 messages (the broker's packet ids) and
		// acknowledges each.
		got := 0
		have := 0
		acks = acks[:0]
		for got < pubs {
			m, err := sub.Read(in[have:])
			if err != nil {
				b.Fatal(err)
			}
			have += m
			off := 0
			for have-off >= size {
				p := in[off : off+size]
				if p[0] != 0x32 {
					b.Fatalf("subscriber got % x", p[:4])
				}
				tl := int(p[2])<<8 | int(p[3])
				pid := p[4+tl : 6+tl]
				acks = append(acks, 0x40, 2, pid[0], pid[1])
				off += size
				got++
			}
			have = copy(in, in[off:have])
		}
		if _, err := sub.Write(acks); err != nil {
			b.Fatal(err)
		}
		for _, c := range conns {
			if _, err := io.ReadFull(c, puback[:]); err != nil || puback[0] != 0x40 {
				b.Fatalf("PUBACK % x, %v", puback, err)
			}
		}
	}
	b.StopTimer()
	if st := srv.Stats(); st.PublishSent < uint64(b.N) {
		b.Fatalf("broker sent %d of %d", st.PublishSent, b.N)
	}
}
