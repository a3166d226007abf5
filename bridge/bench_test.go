package bridge

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/broker/packet"
	"gatewayd/internal/testproxy"
)

// How fast a backlog queued during an outage drains to the cloud over a link
// with a 100 ms round trip, by window size: the cloud's arrival rate from the
// first message of the backlog to the last (reconnection not included).
func BenchmarkBacklogDrainWAN(b *testing.B) {
	const rtt = 100 * time.Millisecond
	for _, w := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("max_inflight=%d", w), func(b *testing.B) {
			n := max(50, 20*w)
			m := startMosquitto(b)
			// A cellular uplink: latency only, bandwidth is the loopback's.
			p := testproxy.New(b, m.Addr())
			p.SetDelay(rtt / 2)
			g := startGateway(b, b.TempDir())
			var mu sync.Mutex
			var got int
			var first, last time.Time
			more := make(chan struct{}, 1)
			sub := connect(b, client.Options{URL: m.URL(), ClientID: "upstream", Username: cloudUser, Password: cloudPass,
				Protocol: packet.V311, CleanStart: true})
			if _, err := sub.Subscribe(testCtx(b, 10*time.Second), func(*client.Message) {
				mu.Lock()
				now := time.Now()
				if got == 0 {
					first = now
				}
				got++
				last = now
				mu.Unlock()
				select {
				case more <- struct{}{}:
				default:
				}
			}, client.Subscription{Filter: "gw1/sensors/seq", QoS: 1}); err != nil {
				b.Fatal(err)
			}
			cfg := basicConfig(p.URL())
			cfg.MaxInflight = w
			cfg.KeepAlive = 30 * time.Second
			br := startBridge(b, g, cfg)
			pub := localClient(b, g, "sensor")
			var total time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				p.Cut(true)
				waitLost(b, br, 10*time.Second)
				publishSeq(b, pub, "sensors/seq", 1, 0, n)
				waitQueued(b, br, n, 10*time.Second)
				mu.Lock()
				got = 0
				mu.Unlock()
				b.StartTimer()
				p.Restore()
				deadline := time.Now().Add(2 * time.Minute)
				for {
					select {
					case <-more:
					case <-time.After(50 * time.Millisecond):
					}
					mu.Lock()
					arrived := got
					mu.Unlock()
					if arrived >= n {
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("drain not done after 2 minutes (%d of %d)", arrived, n)
					}
				}
				b.StopTimer()
				mu.Lock()
				total += last.Sub(first)
				mu.Unlock()
				waitQueued(b, br, 0, 10*time.Second)
			}
			b.ReportMetric(float64((n-1)*b.N)/total.Seconds(), "msg/s")
		})
	}
}
