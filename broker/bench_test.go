package broker

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"gatewayd/broker/packet"
)

// BenchmarkPublishFanOut measures one publisher's QoS 0 messages fanned out
// to N subscribers, all in process over net.Pipe. Subscribers drain their
// pipes as fast as they can; allocs/op is the broker's cost per published
// message (the steady state target is zero).
func BenchmarkPublishFanOut(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			s, _ := startServer(b, func(c *Config) { c.MaxOutputBytes = 1 << 20 }, Options{})
			var wg sync.WaitGroup
			serve := func(nc net.Conn) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s.ServeConn(nc, "bench")
				}()
			}
			var drains sync.WaitGroup
			var conns []net.Conn
			for i := range n {
				cl, sv := net.Pipe()
				serve(sv)
				conns = append(conns, cl)
				c := newRaw(b, cl, packet.V311)
				c.mustConnect(fmt.Sprintf("sub%d", i), true)
				c.subscribe(1, "bench/+/value", 0)
				drains.Add(1)
				go func() {
					defer drains.Done()
					io.Copy(io.Discard, cl)
				}()
			}
			cl, sv := net.Pipe()
			serve(sv)
			conns = append(conns, cl)
			pub := newRaw(b, cl, packet.V311)
			pub.mustConnect("pub", true)
			msg, _ := packet.Append(nil, &packet.Publish{Topic: []byte("bench/sensor1/value"), Payload: make([]byte, 64)}, packet.V311)
			// Batches of messages per write, as a busy publisher's TCP stream.
			const per = 64
			batch := make([]byte, 0, len(msg)*per)
			for range per {
				batch = append(batch, msg...)
			}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += per {
				if _, err := cl.Write(batch); err != nil {
					b.Fatal(err)
				}
			}
			// A PINGRESP after the last message shows the broker handled them.
			pub.send(&packet.Pingreq{})
			if p := pub.next(); p.Type() != packet.PINGRESP {
				b.Fatalf("got %v", p.Type())
			}
			b.StopTimer()
			for _, c := range conns {
				c.Close()
			}
			drains.Wait()
			wg.Wait()
			st := s.Stats()
			b.ReportMetric(float64(st.PublishSent)/float64(b.N), "deliveries/op")
		})
	}
}
