package bridge

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/broker/packet"
)

// wanProxy relays TCP with a fixed delay each way, as a cellular uplink
// would (latency only; bandwidth is the loopback's).
type wanProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration // one way

	mu    sync.Mutex
	down  bool
	conns []net.Conn
	wg    sync.WaitGroup
}

func newWANProxy(tb testing.TB, target string, rtt time.Duration) *wanProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &wanProxy{ln: ln, target: target, delay: rtt / 2}
	p.wg.Add(1)
	go p.accept()
	tb.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *wanProxy) URL() string { return "mqtt://" + p.ln.Addr().String() }

func (p *wanProxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			cc.Close()
			continue
		}
		sc, err := net.Dial("tcp", p.target)
		if err != nil {
			cc.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, cc, sc)
		p.mu.Unlock()
		p.wg.Add(4)
		go p.relay(cc, sc)
		go p.relay(sc, cc)
	}
}

// relay passes what it reads from one side to the other delay later, in
// order.
func (p *wanProxy) relay(from, to net.Conn) {
	type chunk struct {
		due time.Time
		b   []byte
	}
	ch := make(chan chunk, 1<<14)
	go func() {
		defer p.wg.Done()
		defer to.Close()
		for c := range ch {
			time.Sleep(time.Until(c.due))
			if _, err := to.Write(c.b); err != nil {
				for range ch {
				}
				return
			}
		}
	}()
	defer p.wg.Done()
	defer close(ch)
	defer from.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if n > 0 {
			ch <- chunk{time.Now().Add(p.delay), append([]byte(nil), buf[:n]...)}
		}
		if err != nil {
			return
		}
	}
}

// setDown cuts every connection and refuses new ones (true), or accepts
// them again (false).
func (p *wanProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// How fast a backlog queued during an outage drains to the cloud over a link
// with a 100 ms round trip, by window size: the cloud's arrival rate from the
// first message of the backlog to the last (reconnection not included).
func BenchmarkBacklogDrainWAN(b *testing.B) {
	const rtt = 100 * time.Millisecond
	for _, w := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("max_inflight=%d", w), func(b *testing.B) {
			n := max(50, 20*w)
			m := startMosquitto(b)
			p := newWANProxy(b, m.Addr(), rtt)
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
				p.setDown(true)
				waitLost(b, br, 10*time.Second)
				publishSeq(b, pub, "sensors/seq", 1, 0, n)
				waitQueued(b, br, n, 10*time.Second)
				mu.Lock()
				got = 0
				mu.Unlock()
				b.StartTimer()
				p.setDown(false)
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
