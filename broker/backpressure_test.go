package broker_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gatewayd/broker"
)

// dialRawBuffers is dialRaw with the socket's kernel buffers set (0 leaves
// one as the kernel chooses).
func dialRawBuffers(t *testing.T, b *testBroker, name string, rcvbuf, sndbuf int) *rawClient {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if rcvbuf > 0 {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}
			if sndbuf > 0 && serr == nil {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, sndbuf)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", b.addr)
	if err != nil {
		t.Fatalf("%s: dial: %v", name, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn), name: name}
}

// slowReader reads at most chunk bytes per pause: a subscriber that reads
// steadily but slower than a publisher can send.
type slowReader struct {
	r     io.Reader
	chunk int
	pause time.Duration
}

func (s slowReader) Read(p []byte) (int, error) {
	if len(p) > s.chunk {
		p = p[:s.chunk]
	}
	time.Sleep(s.pause)
	return s.r.Read(p)
}

// seqPayload is message i's payload: its sequence number, padded to size.
func seqPayload(i, size int) string {
	s := fmt.Sprintf("%08d", i)
	for len(s) < size {
		s += "................................................................"
	}
	return s[:size]
}

// publishFlood writes n QoS 0 PUBLISH to topic, 64 to a write, then waits
// for PINGRESP: once it arrives the broker has routed every message.
func publishFlood(t *testing.T, pub *rawClient, topic string, n, size int) {
	t.Helper()
	const per = 64
	var batch []byte
	for i := range n {
		batch = append(batch, publishPacket(false, pubSpec{Topic: topic, Payload: seqPayload(i, size)})...)
		if (i+1)%per == 0 || i == n-1 {
			pub.send(batch)
			batch = batch[:0]
		}
	}
	pub.send([]byte{tPINGREQ << 4, 0})
	pub.expect(tPINGRESP)
}

// A subscriber that reads slower than the publisher sends, but keeps making
// progress, loses no QoS 0 message: the publisher is held back instead. With
// slow_consumer_wait 0 the same subscriber, starting to read only once the
// publisher is done, loses messages: nothing holds the publisher back, so
// whatever the broker's speed, no more than the socket buffers and the
// output buffer can wait for the subscriber.
func TestBackpressureSlowReaderLosesNothingQoS0(t *testing.T) {
	const n, size = 768, 16 << 10 // 12 MiB
	for _, wait := range []time.Duration{0, 5 * time.Second} {
		t.Run("slow_consumer_wait="+wait.String(), func(t *testing.T) {
			b := startBroker(t, func(c *broker.Config) {
				c.SlowConsumerWait = wait
			}, broker.Options{})
			sub := dialRawBuffers(t, b, "slow subscriber", 64<<10, 0)
			sub.connect(connectSpec{Version: 4, ClientID: "slow", Clean: true, KeepAlive: 0})
			sub.subscribe(nil, rawSub{Filter: "bp/t", Options: 0})
			// At most 4 MB/s from here on.
			sub.br = bufio.NewReaderSize(slowReader{r: sub.conn, chunk: 64 << 10, pause: 16 * time.Millisecond}, 64<<10)

			var got atomic.Int64
			var order error
			done := make(chan struct{})
			start := make(chan struct{})
			if wait > 0 {
				close(start)
			}
			go func() {
				defer close(done)
				<-start
				next := 0
				for {
					p, err := sub.next(waitTimeout)
					if err != nil {
						return // closed at the end of the test, or silent for waitTimeout
					}
					if p.Type != tPUBLISH {
						continue
					}
					pp, err := p.publish(false)
					if err != nil {
						order = err
						return
					}
					seq, err := strconv.Atoi(pp.Payload[:8])
					if err != nil || len(pp.Payload) != size || seq < next {
						order = fmt.Errorf("message %d after %d (payload %d bytes, %v)", seq, next-1, len(pp.Payload), err)
						return
					}
					next = seq + 1
					got.Add(1)
				}
			}()

			before := b.Stats()
			pub := dialRawBuffers(t, b, "publisher", 0, 64<<10)
			pub.connect(connectSpec{Version: 4, ClientID: "pub", Clean: true, KeepAlive: 0})
			publishFlood(t, pub, "bp/t", n, size)
			if wait == 0 {
				close(start)
			}
			dropped := int(b.Stats().DroppedSlowConsumer - before.DroppedSlowConsumer)

			deadline := time.Now().Add(6 * waitTimeout)
			for int(got.Load()) < n-dropped && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			sub.conn.Close()
			<-done
			if order != nil {
				t.Fatalf("subscriber: %v", order)
			}
			if int(got.Load()) != n-dropped {
				t.Fatalf("subscriber received %d messages; %d sent, %d counted as dropped", got.Load(), n, dropped)
			}
			t.Logf("%d of %d delivered, %d dropped", got.Load(), n, dropped)
			if wait == 0 {
				if dropped == 0 {
					t.Fatalf("with slow_consumer_wait 0 nothing was dropped: the subscriber is not slower than the publisher, so this test shows nothing")
				}
				return
			}
			if dropped != 0 {
				t.Errorf("Stats().DroppedSlowConsumer rose by %d for a subscriber that keeps reading; want 0 (the publisher should have been held back)", dropped)
			}
			if st := b.Stats().SlowConsumerStalls - before.SlowConsumerStalls; st != 0 {
				t.Errorf("Stats().SlowConsumerStalls rose by %d; want 0", st)
			}
		})
	}
}

// A subscriber that stops reading costs the publisher one wait: it is then
// marked stalled, its messages are dropped and counted without waiting, and
// a healthy subscriber of the same topic receives everything.
func TestBackpressureStalledSubscriberCostsOneWait(t *testing.T) {
	const n, size = 3000, 4096 // 12 MB, more than the kernel buffers towards the stuck client
	b := startBroker(t, func(c *broker.Config) {
		c.SlowConsumerWait = 300 * time.Millisecond
		c.WriteTimeout = 10 * time.Minute // the stuck client is not disconnected during the test
	}, broker.Options{})
	stuck := dialRawBuffers(t, b, "stuck subscriber", 4096, 0)
	stuck.connect(connectSpec{Version: 4, ClientID: "stuck", Clean: true, KeepAlive: 0})
	stuck.subscribe(nil, rawSub{Filter: "bp/s", Options: 0})
	healthy := dialRaw(t, b, "healthy subscriber")
	healthy.connect(connectSpec{Version: 4, ClientID: "healthy", Clean: true, KeepAlive: 0})
	healthy.subscribe(nil, rawSub{Filter: "bp/s", Options: 0})

	var wg sync.WaitGroup
	var got int
	var hErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for got < n {
			p, err := healthy.next(6 * waitTimeout)
			if err != nil {
				hErr = err
				return
			}
			if p.Type != tPUBLISH {
				continue
			}
			pp, err := p.publish(false)
			if err == nil && pp.Payload != seqPayload(got, size) {
				err = fmt.Errorf("message %d: got %.8q", got, pp.Payload)
			}
			if err != nil {
				hErr = err
				return
			}
			got++
		}
	}()
	before := b.Stats()
	pub := dialRaw(t, b, "publisher")
	pub.connect(connectSpec{Version: 4, ClientID: "pub", Clean: true, KeepAlive: 0})
	publishFlood(t, pub, "bp/s", n, size)
	wg.Wait()
	if hErr != nil {
		t.Fatalf("healthy subscriber, after %d of %d messages: %v", got, n, hErr)
	}
	after := b.Stats()
	dropped := after.DroppedSlowConsumer - before.DroppedSlowConsumer
	if stalls := after.SlowConsumerStalls - before.SlowConsumerStalls; stalls != 1 {
		t.Errorf("Stats().SlowConsumerStalls rose by %d; want 1 (one wait for the stuck subscriber, then drops without waiting)", stalls)
	}
	// The kernel holds at most a few MB towards the stuck client; the
	// broker at most two output buffers.
	if dropped < n/4 {
		t.Errorf("Stats().DroppedSlowConsumer rose by %d of %d messages to a subscriber that reads nothing; want at least %d", dropped, n, n/4)
	}
	if after.PublishDropped-before.PublishDropped < dropped {
		t.Errorf("Stats().PublishDropped rose by %d, less than the %d slow-consumer drops", after.PublishDropped-before.PublishDropped, dropped)
	}
	t.Logf("stuck subscriber: %d of %d dropped", dropped, n)
}

// A QoS 1 subscriber that acknowledges slower than the publisher sends gets
// everything, and its queue stays near max_output_bytes instead of growing
// with the publisher's window: the publisher waits for the queue.
func TestBackpressureQoS1QueueStaysNearSoftBound(t *testing.T) {
	const n, size, window = 1500, 1000, 300
	const soft = 64 << 10
	b := startBroker(t, func(c *broker.Config) {
		c.MaxOutputBytes = soft
		c.SlowConsumerWait = 5 * time.Second
	}, broker.Options{})
	sub := dialRaw(t, b, "slow QoS 1 subscriber")
	sub.connect(connectSpec{Version: 4, ClientID: "slow1", Clean: true, KeepAlive: 0})
	sub.subscribe(nil, rawSub{Filter: "bp/q", Options: 1})

	var wg sync.WaitGroup
	var subErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			p, err := sub.next(6 * waitTimeout)
			if err == nil && p.Type != tPUBLISH {
				err = fmt.Errorf("got %v", p)
			}
			var pp *rawPublish
			if err == nil {
				pp, err = p.publish(false)
			}
			if err == nil && pp.Payload != seqPayload(i, size) {
				err = fmt.Errorf("message %d: got %.8q", i, pp.Payload)
			}
			if err != nil {
				subErr = fmt.Errorf("after %d of %d messages: %w", i, n, err)
				return
			}
			time.Sleep(time.Millisecond)
			if err := sub.trySend(ackPacket(false, tPUBACK, pp.ID)); err != nil {
				subErr = err
				return
			}
		}
	}()

	var maxQueued atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			maxQueued.Store(max(maxQueued.Load(), b.Stats().Queued))
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()

	// The publisher keeps up to window QoS 1 messages unacknowledged.
	pub := dialRaw(t, b, "publisher")
	pub.connect(connectSpec{Version: 4, ClientID: "pub1", Clean: true, KeepAlive: 0})
	acked := 0
	for i := range n {
		if i-acked >= window {
			pub.expect(tPUBACK)
			acked++
		}
		pub.send(publishPacket(false, pubSpec{Topic: "bp/q", Payload: seqPayload(i, size), QoS: 1, ID: uint16(i%60000 + 1)}))
	}
	for acked < n {
		pub.expect(tPUBACK)
		acked++
	}
	wg.Wait()
	close(stop)
	<-sampled
	if subErr != nil {
		t.Fatalf("subscriber: %v", subErr)
	}
	if d := b.Stats().PublishDropped; d != 0 {
		t.Errorf("Stats().PublishDropped = %d; want 0", d)
	}
	// A queued message counts its topic, payload and 64 bytes of overhead
	// against the bound; the publisher adds one beyond it before waiting.
	limit := int64(soft/(size+len("bp/q")+64) + 2)
	if m := maxQueued.Load(); m > limit {
		t.Errorf("the subscriber's queue held up to %d messages; want at most %d (max_output_bytes %d), not the publisher's window of %d", m, limit, soft, window)
	} else {
		t.Logf("queue peaked at %d messages (limit %d, publisher window %d)", m, limit, window)
	}
}

// A subscriber that reads nothing for write_timeout is disconnected, with the
// event loop and with a goroutine per connection alike; the publisher and
// its other subscribers are not.
func TestWriteTimeoutDisconnectsStuckSubscriber(t *testing.T) {
	const n, size = 2000, 4096 // 8 MB, more than the kernel buffers towards the stuck client
	for _, loop := range []bool{true, false} {
		t.Run(fmt.Sprintf("event_loop=%v", loop), func(t *testing.T) {
			b := startBroker(t, func(c *broker.Config) {
				c.EventLoop = loop
				c.SlowConsumerWait = 50 * time.Millisecond
				c.WriteTimeout = time.Second
			}, broker.Options{})
			stuck := dialRawBuffers(t, b, "stuck subscriber", 4096, 0)
			stuck.connect(connectSpec{Version: 4, ClientID: "stuck", Clean: true, KeepAlive: 0})
			stuck.subscribe(nil, rawSub{Filter: "wt/s", Options: 0})
			pub := dialRaw(t, b, "publisher")
			pub.connect(connectSpec{Version: 4, ClientID: "pub", Clean: true, KeepAlive: 0})
			publishFlood(t, pub, "wt/s", n, size)
			deadline := time.Now().Add(waitTimeout)
			for b.Stats().ClientsConnected != 1 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if got := b.Stats().ClientsConnected; got != 1 {
				t.Fatalf("%d clients connected %v after the flood, want 1: the stuck subscriber should be gone after write_timeout (1s)", got, waitTimeout)
			}
			// The publisher is still served, and it is the stuck
			// subscriber whose connection the broker closed.
			pub.send([]byte{tPINGREQ << 4, 0})
			pub.expect(tPINGRESP)
			for {
				if _, err := stuck.next(waitTimeout); err != nil {
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("stuck subscriber: still open: %v", err)
					}
					break
				}
			}
		})
	}
}

// A publisher waiting for a QoS 1 subscriber's queue stops waiting as soon
// as that subscriber disconnects, not when slow_consumer_wait runs out.
func TestBackpressureWaitEndsWhenSubscriberLeaves(t *testing.T) {
	const n, size = 300, 1000
	b := startBroker(t, func(c *broker.Config) {
		c.MaxOutputBytes = 64 << 10
		c.SlowConsumerWait = time.Hour // only the disconnection can end the wait
	}, broker.Options{})
	sub := dialRaw(t, b, "QoS 1 subscriber that never acknowledges")
	sub.connect(connectSpec{Version: 4, ClientID: "silent", Clean: true, KeepAlive: 0})
	sub.subscribe(nil, rawSub{Filter: "bp/w", Options: 1})
	pub := dialRaw(t, b, "publisher")
	pub.connect(connectSpec{Version: 4, ClientID: "pubw", Clean: true, KeepAlive: 0})
	var batch []byte
	for i := range n {
		batch = append(batch, publishPacket(false, pubSpec{Topic: "bp/w", Payload: seqPayload(i, size), QoS: 1, ID: uint16(i + 1)})...)
	}
	batch = append(batch, tPINGREQ<<4, 0)
	pub.send(batch)
	// The subscriber's queue (300 KB) passes max_output_bytes (64 KiB): the
	// publisher's packets wait until the subscriber acknowledges or leaves.
	for deadline := time.Now().Add(waitTimeout); b.Stats().Queued < 61; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber's queue holds %d messages, want 61 (max_output_bytes)", b.Stats().Queued)
		}
	}
	sub.conn.Close()
	for range n {
		pub.expect(tPUBACK)
	}
	pub.expect(tPINGRESP)
}
