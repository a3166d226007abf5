package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/scripts/bench/internal/wire"
)

const (
	readBufSize = 256 << 10
	sockBuf     = 128 << 10
)

// dial opens a TCP connection and completes the MQTT handshake.
func dial(ctx context.Context, addr, clientID string, clean bool, rbuf int) (net.Conn, *bufio.Reader, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	// Small, fixed kernel buffers on the load generator's side: otherwise
	// autotuning lets megabytes of a saturated flow wait in the kernel, and
	// the figures measure socket buffers instead of the broker.
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(sockBuf)
		_ = tc.SetReadBuffer(sockBuf)
	}
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		c.Close()
		return nil, nil, err
	}
	if _, err := c.Write(wire.AppendConnect(nil, clientID, clean)); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("connect %s: %w", clientID, err)
	}
	r := bufio.NewReaderSize(c, rbuf)
	first, body, n, err := wire.Reader{R: r}.Next()
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("connack %s: %w", clientID, err)
	}
	if first>>4 != wire.CONNACK || len(body) != 2 || body[1] != 0 {
		c.Close()
		return nil, nil, fmt.Errorf("connack %s: unexpected % x", clientID, body)
	}
	wire.Reader{R: r}.Release(n)
	_ = c.SetDeadline(time.Time{})
	return c, r, nil
}

// Subscriber is one subscribing connection and its verifier.
type Subscriber struct {
	conn   net.Conn
	r      *bufio.Reader
	V      *Verifier
	unique atomic.Uint64
	last   atomic.Int64 // Now() of the last valid message
	done   chan struct{}
	err    error
}

// SubscriberConfig describes one subscriber.
type SubscriberConfig struct {
	Addr       string
	ClientID   string
	Clean      bool
	Filters    []string
	QoS        byte
	Publishers int
	Owns       func(pub uint32, seq uint64) bool
}

// DialSubscriber connects and subscribes to every filter (many per SUBSCRIBE,
// pipelined), returning once every SUBACK has granted its filter.
func DialSubscriber(ctx context.Context, cfg SubscriberConfig) (*Subscriber, error) {
	c, r, err := dial(ctx, cfg.Addr, cfg.ClientID, cfg.Clean, readBufSize)
	if err != nil {
		return nil, err
	}
	s := &Subscriber{conn: c, r: r, V: NewVerifier(cfg.Publishers), done: make(chan struct{})}
	s.V.Owns = cfg.Owns
	const perPacket = 100
	packets := (len(cfg.Filters) + perPacket - 1) / perPacket
	deadline := time.Now().Add(120 * time.Second)
	_ = c.SetDeadline(deadline)
	werr := make(chan error, 1)
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		subs := make([]wire.Sub, 0, perPacket)
		var buf []byte
		for i := 0; i < packets; i++ {
			subs = subs[:0]
			for _, f := range cfg.Filters[i*perPacket : min((i+1)*perPacket, len(cfg.Filters))] {
				subs = append(subs, wire.Sub{Filter: f, QoS: cfg.QoS})
			}
			buf = wire.AppendSubscribe(buf[:0], uint16(i%65535+1), subs)
			if _, err := w.Write(buf); err != nil {
				werr <- err
				return
			}
		}
		werr <- w.Flush()
	}()
	rd := wire.Reader{R: r}
	for got := 0; got < packets; {
		first, body, n, err := rd.Next()
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("suback %s after %d of %d: %w", cfg.ClientID, got, packets, err)
		}
		if first>>4 == wire.SUBACK {
			for _, g := range body[2:] {
				if g > 2 {
					c.Close()
					return nil, fmt.Errorf("suback %s: filter refused (0x%02x)", cfg.ClientID, g)
				}
			}
			got++
		}
		rd.Release(n)
	}
	if err := <-werr; err != nil {
		c.Close()
		return nil, fmt.Errorf("subscribe %s: %w", cfg.ClientID, err)
	}
	_ = c.SetDeadline(time.Time{})
	return s, nil
}

// Run reads and verifies messages until the connection is closed. QoS 1
// messages are acknowledged, the PUBACKs batched until the read buffer is
// empty.
func (s *Subscriber) Run() {
	defer close(s.done)
	rd := wire.Reader{R: s.r}
	var acks []byte
	for {
		// Acknowledge when the read buffer is empty, or every 16 messages:
		// with a steady stream it may never be exactly empty, and a broker
		// stops sending when its in-flight window fills.
		if len(acks) > 0 && (s.r.Buffered() == 0 || len(acks) >= 16*4) {
			if _, err := s.conn.Write(acks); err != nil {
				s.err = err
				return
			}
			acks = acks[:0]
		}
		first, body, n, err := rd.Next()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				s.err = err
			}
			return
		}
		if first>>4 == wire.PUBLISH {
			_, id, payload, err := wire.ParsePublish(first, body)
			if err != nil {
				s.V.Corrupt++
			} else {
				before := s.V.Unique
				now := Now()
				s.V.Check(payload, now)
				if s.V.Unique != before {
					s.unique.Add(1)
					s.last.Store(now)
				}
				if (first>>1)&3 > 0 {
					acks = wire.AppendPuback(acks, id)
				}
			}
		}
		rd.Release(n)
	}
}

// Unique is the number of distinct valid messages so far.
func (s *Subscriber) Unique() uint64 { return s.unique.Load() }

// Last is when the last distinct valid message arrived (Now() clock).
func (s *Subscriber) Last() int64 { return s.last.Load() }

// Close disconnects and waits for Run to return (if it was started).
func (s *Subscriber) Close(started bool) error {
	_, _ = s.conn.Write(wire.Disconnect)
	s.conn.Close()
	if started {
		<-s.done
	}
	return s.err
}

// PublisherConfig describes one publisher.
type PublisherConfig struct {
	Addr     string
	ClientID string
	ID       uint32   // publisher id carried in every payload
	Topics   []string // message seq goes to Topics[(ID + seq*Stride) % len]
	Stride   uint64
	QoS      byte
	Rate     float64 // messages per second; 0 sends as fast as the broker takes them
	Window   int     // QoS 1 messages in flight
	Batch    int     // messages per write when saturated
	Max      uint64  // at most this many messages
}

// TopicIndex is the index into Topics of message seq of a publisher.
func (c *PublisherConfig) TopicIndex(seq uint64) int {
	if len(c.Topics) == 1 {
		return 0
	}
	return int((uint64(c.ID) + seq*c.Stride) % uint64(len(c.Topics)))
}

// Publisher is one publishing connection.
type Publisher struct {
	cfg   PublisherConfig
	conn  net.Conn
	r     *bufio.Reader
	sent  atomic.Uint64
	acked atomic.Uint64
	sem   chan struct{}
	wg    sync.WaitGroup
	err   error
	rerr  error
}

// DialPublisher connects a publisher.
func DialPublisher(ctx context.Context, cfg PublisherConfig) (*Publisher, error) {
	c, r, err := dial(ctx, cfg.Addr, cfg.ClientID, true, readBufSize)
	if err != nil {
		return nil, err
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 64
	}
	if cfg.Stride == 0 {
		cfg.Stride = 1
	}
	p := &Publisher{cfg: cfg, conn: c, r: r}
	if cfg.QoS > 0 {
		if cfg.Window <= 0 || cfg.Window > 65535 {
			cfg.Window = 100
			p.cfg.Window = 100
		}
		p.sem = make(chan struct{}, cfg.Window)
		p.wg.Add(1)
		go p.readAcks()
	}
	return p, nil
}

func (p *Publisher) readAcks() {
	defer p.wg.Done()
	rd := wire.Reader{R: p.r}
	for {
		first, _, n, err := rd.Next()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
				p.rerr = err
			}
			return
		}
		if first>>4 == wire.PUBACK {
			select {
			case <-p.sem:
				p.acked.Add(1)
			default: // an acknowledgement nobody waits for
			}
		}
		rd.Release(n)
	}
}

// Run publishes until stop is closed or Max messages are sent. For QoS 1 it
// then waits, until drainBy, for the outstanding PUBACKs.
func (p *Publisher) Run(stop <-chan struct{}, drainBy time.Time) error {
	cfg := &p.cfg
	// A broker that stops reading must not hold the publisher past drainBy.
	ran := make(chan struct{})
	defer close(ran)
	go func() {
		select {
		case <-stop:
			_ = p.conn.SetWriteDeadline(drainBy)
		case <-ran:
		}
	}()
	buf := make([]byte, 0, cfg.Batch*(PayloadSize+64))
	payload := make([]byte, PayloadSize)
	var seq uint64
	var pid uint16
	start := Now()
	var interval int64
	if cfg.Rate > 0 {
		interval = int64(float64(time.Second) / cfg.Rate)
	}
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		_, err := p.conn.Write(buf)
		buf = buf[:0]
		return err
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for seq < cfg.Max && !stopped() {
		n := uint64(cfg.Batch)
		if interval > 0 {
			due := uint64((Now()-start)/interval) + 1
			if due <= seq {
				wait := time.Duration(int64(seq)*interval + start - Now())
				if wait > 0 {
					t := time.NewTimer(wait)
					select {
					case <-stop:
						t.Stop()
						return p.finish(drainBy)
					case <-t.C:
					}
				}
				continue
			}
			n = min(due-seq, uint64(cfg.Batch))
		}
		n = min(n, cfg.Max-seq)
		for i := uint64(0); i < n; i++ {
			if cfg.QoS > 0 {
				select {
				case p.sem <- struct{}{}:
				default:
					if err := flush(); err != nil {
						p.err = err
						return err
					}
					select {
					case p.sem <- struct{}{}:
					case <-stop:
						p.sent.Store(seq)
						return p.finish(drainBy)
					}
				}
				pid++
				if pid == 0 {
					pid = 1
				}
			}
			FillPayload(payload, cfg.ID, seq, Now())
			buf = wire.AppendPublish(buf, cfg.Topics[cfg.TopicIndex(seq)], cfg.QoS, pid, payload)
			seq++
		}
		if err := flush(); err != nil {
			p.err = err
			p.sent.Store(seq)
			return err
		}
		p.sent.Store(seq)
	}
	return p.finish(drainBy)
}

func (p *Publisher) finish(drainBy time.Time) error {
	if p.cfg.QoS == 0 {
		return nil
	}
	for p.acked.Load() < p.sent.Load() && time.Now().Before(drainBy) {
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Sent is how many messages were written.
func (p *Publisher) Sent() uint64 { return p.sent.Load() }

// Acked is how many QoS 1 messages were acknowledged.
func (p *Publisher) Acked() uint64 { return p.acked.Load() }

// Close disconnects the publisher.
func (p *Publisher) Close() error {
	_, _ = p.conn.Write(wire.Disconnect)
	p.conn.Close()
	p.wg.Wait()
	if p.err != nil {
		return p.err
	}
	return p.rerr
}

// OpenIdle opens n connections that connect and then stay silent, parallel
// at a time. On error it closes what it opened.
func OpenIdle(ctx context.Context, addr, prefix string, n, parallel int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				c, _, err := dial(ctx, addr, fmt.Sprintf("%s-%d", prefix, i), true, 16)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("idle connection %d of %d: %w", i, n, err)
					}
					mu.Unlock()
					next.Store(int64(n))
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		CloseAll(conns)
		return nil, firstErr
	}
	return conns, nil
}

// CloseAll closes every non-nil connection.
func CloseAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
