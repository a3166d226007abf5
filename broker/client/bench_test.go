package client

import (
	"testing"
)

// BenchmarkPublish measures publishing to gatewayd's broker over loopback
// TCP: QoS 0 waits for the write, QoS 1 for the PUBACK, one at a time
// (sync) or with up to the server's window in flight (async).
func BenchmarkPublish(b *testing.B) {
	for _, bc := range []struct {
		name  string
		qos   byte
		async bool
	}{{"qos0", 0, false}, {"qos1-sync", 1, false}, {"qos1-async", 1, true}, {"qos2-async", 2, true}} {
		b.Run(bc.name, func(b *testing.B) {
			url := startGatewayd(b)
			c, err := New(Options{URL: url, CleanStart: true})
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Connect(b.Context()); err != nil {
				b.Fatal(err)
			}
			defer c.Disconnect(b.Context())
			m := &Message{Topic: "bench/readings", Payload: make([]byte, 64), QoS: bc.qos}
			b.SetBytes(int64(len(m.Payload)))
			b.ReportAllocs()
			if bc.async {
				done := make(chan error, 1024)
				inflight := 0
				for b.Loop() {
					c.PublishAsync(m, func(err error) { done <- err })
					inflight++
					for inflight >= cap(done) {
						if err := <-done; err != nil {
							b.Fatal(err)
						}
						inflight--
					}
				}
				for ; inflight > 0; inflight-- {
					if err := <-done; err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			for b.Loop() {
				if err := c.Publish(b.Context(), m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
