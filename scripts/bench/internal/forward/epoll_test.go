//go:build linux

package forward

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gatewayd/scripts/bench/internal/wire"
)

func startEpoll(t *testing.T) (string, *Epoll, func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &Epoll{}
	done := make(chan error, 1)
	go func() { done <- e.Serve(ln) }()
	var once sync.Once
	var serr error
	stop := func() error {
		once.Do(func() { ln.Close(); serr = <-done })
		return serr
	}
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), e, stop
}

type client struct {
	t  *testing.T
	c  net.Conn
	rd wire.Reader
}

func dialRaw(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: c, rd: wire.Reader{R: bufio.NewReaderSize(c, 64<<10)}}
}

func (c *client) write(b []byte) {
	c.t.Helper()
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// next returns the type, flags and a copy of the body of the next packet.
func (c *client) next() (byte, []byte, error) {
	first, body, n, err := c.rd.Next()
	if err != nil {
		return 0, nil, err
	}
	body = append([]byte(nil), body...)
	c.rd.Release(n)
	return first, body, nil
}

func (c *client) expect(typ byte) []byte {
	c.t.Helper()
	first, body, err := c.next()
	if err != nil {
		c.t.Fatalf("waiting for packet type %d: %v", typ, err)
	}
	if first>>4 != typ {
		c.t.Fatalf("got packet type %d (% x), want %d", first>>4, body, typ)
	}
	return body
}

func connect(t *testing.T, addr, id string) *client {
	c := dialRaw(t, addr)
	c.write(wire.AppendConnect(nil, id, true))
	if b := c.expect(wire.CONNACK); len(b) != 2 || b[1] != 0 {
		t.Fatalf("CONNACK % x", b)
	}
	return c
}

func TestEpollAnswersConnectSubscribeAndPing(t *testing.T) {
	addr, _, _ := startEpoll(t)
	c := connect(t, addr, "a")
	c.write(wire.AppendSubscribe(nil, 7, []wire.Sub{{Filter: "x", QoS: 1}, {Filter: "y/#", QoS: 0}}))
	if b := c.expect(wire.SUBACK); binary.BigEndian.Uint16(b) != 7 || string(b[2:]) != "\x01\x00" {
		t.Fatalf("SUBACK % x", b)
	}
	c.write([]byte{wire.PINGREQ << 4, 0})
	c.expect(wire.PINGRESP)
}

func TestEpollCopiesPublishesAndAcknowledgesQoS1(t *testing.T) {
	addr, _, _ := startEpoll(t)
	s1, s2 := connect(t, addr, "s1"), connect(t, addr, "s2")
	for _, s := range []*client{s1, s2} {
		s.write(wire.AppendSubscribe(nil, 1, []wire.Sub{{Filter: "#", QoS: 1}}))
		s.expect(wire.SUBACK)
	}
	p := connect(t, addr, "p")
	var out []byte
	for i := 0; i < 100; i++ {
		out = wire.AppendPublish(out, "t", byte(i%2), uint16(1000+i), []byte(fmt.Sprint("m", i)))
	}
	// Byte by byte at first, then the rest at once: packets split across
	// reads must be framed like whole ones.
	for _, b := range out[:50] {
		p.write([]byte{b})
	}
	p.write(out[50:])
	for i := 1; i < 100; i += 2 {
		if b := p.expect(wire.PUBACK); binary.BigEndian.Uint16(b) != uint16(1000+i) {
			t.Fatalf("PUBACK for %d, want %d", binary.BigEndian.Uint16(b), 1000+i)
		}
	}
	for _, s := range []*client{s1, s2} {
		for i := 0; i < 100; i++ {
			first, body, err := s.next()
			if err != nil {
				t.Fatal(err)
			}
			want := wire.AppendPublish(nil, "t", byte(i%2), uint16(1000+i), []byte(fmt.Sprint("m", i)))
			if got := append(wire.AppendLength([]byte{first}, len(body)), body...); string(got) != string(want) {
				t.Fatalf("message %d: % x, want % x", i, got, want)
			}
		}
	}
}

func TestEpollClosesOnlyAConnectionThatSendsGarbage(t *testing.T) {
	addr, e, _ := startEpoll(t)
	good := connect(t, addr, "good")
	bad := connect(t, addr, "bad")
	bad.write([]byte{wire.PUBLISH << 4, 0xff, 0xff, 0xff, 0xff, 0x7f}) // a five-byte remaining length
	if _, _, err := bad.next(); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isConnError(err) {
		t.Fatalf("after garbage: %v, want the connection closed", err)
	}
	good.write([]byte{wire.PINGREQ << 4, 0})
	good.expect(wire.PINGRESP)
	if st := e.Stats(); st.Malformed != 1 || st.Conns != 1 {
		t.Fatalf("stats: %v", st)
	}
}

func isConnError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe)
}

// Connections that come and go while messages flow never get another
// connection's bytes (each starts with its CONNACK, then its SUBACK), and the
// steady subscriber gets every message once, in order.
func TestEpollConnectionChurnDuringAFlow(t *testing.T) {
	addr, e, _ := startEpoll(t)
	steady := connect(t, addr, "steady")
	steady.write(wire.AppendSubscribe(nil, 1, []wire.Sub{{Filter: "t", QoS: 0}}))
	steady.expect(wire.SUBACK)
	pub := connect(t, addr, "pub")

	// The publisher publishes until the churn is over; the steady
	// subscriber checks every message as it comes.
	var churnOver atomic.Bool
	published := make(chan int, 1)
	pubErr := make(chan error, 1)
	go func() {
		var buf []byte
		var payload [64]byte
		i := 0
		for ; !churnOver.Load() || i < 1000; i++ {
			binary.BigEndian.PutUint64(payload[:], uint64(i))
			buf = wire.AppendPublish(buf, "t", 0, 0, payload[:])
			if len(buf) > 4<<10 {
				if _, err := pub.c.Write(buf); err != nil {
					pubErr <- err
					return
				}
				buf = buf[:0]
			}
		}
		if _, err := pub.c.Write(buf); err != nil {
			pubErr <- err
			return
		}
		published <- i
	}()
	var received atomic.Int64
	steadyErr := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			first, body, err := steady.next()
			if err != nil {
				steadyErr <- fmt.Errorf("steady subscriber after %d messages: %w", i, err)
				return
			}
			_, _, payload, err := wire.ParsePublish(first, body)
			if first>>4 != wire.PUBLISH || err != nil || len(payload) != 64 || binary.BigEndian.Uint64(payload) != uint64(i) {
				steadyErr <- fmt.Errorf("message %d: type %d % x", i, first>>4, body)
				return
			}
			received.Add(1)
		}
	}()

	var wg sync.WaitGroup
	churnErr := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if err := churnOnce(addr, w, i); err != nil {
					churnErr <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	churnOver.Store(true)
	close(churnErr)
	for err := range churnErr {
		t.Error(err)
	}
	var n int
	select {
	case n = <-published:
	case err := <-pubErr:
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); received.Load() < int64(n) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	steady.c.Close()
	if err := <-steadyErr; received.Load() != int64(n) {
		t.Fatalf("steady subscriber got %d of %d messages: %v", received.Load(), n, err)
	}
	// Only the publisher is left.
	for deadline := time.Now().Add(10 * time.Second); e.Stats().Conns != 1 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if st := e.Stats(); st.Conns != 1 || st.Accepted != 2+4*50 || st.Malformed+st.Failed+st.EpollErrors != 0 {
		t.Fatalf("stats after churn: %v", st)
	}
}

// churnOnce connects, subscribes (every other time), reads a little of the
// flow and goes away without a DISCONNECT, often with bytes unread.
func churnOnce(addr string, w, i int) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	rd := wire.Reader{R: bufio.NewReaderSize(c, 4<<10)}
	req := wire.AppendConnect(nil, fmt.Sprintf("churn-%d-%d", w, i), true)
	sub := i%2 == 0
	if sub {
		req = wire.AppendSubscribe(req, uint16(i+1), []wire.Sub{{Filter: "t"}})
	}
	if _, err := c.Write(req); err != nil {
		return err
	}
	first, _, n, err := rd.Next()
	if err != nil || first>>4 != wire.CONNACK {
		return fmt.Errorf("churn %d/%d: first packet type %d, %v; want CONNACK", w, i, first>>4, err)
	}
	rd.Release(n)
	if !sub {
		return nil
	}
	first, body, n, err := rd.Next()
	if err != nil || first>>4 != wire.SUBACK || binary.BigEndian.Uint16(body) != uint16(i+1) {
		return fmt.Errorf("churn %d/%d: second packet type %d, %v; want SUBACK %d", w, i, first>>4, err, i+1)
	}
	rd.Release(n)
	for k := 0; k < i%7; k++ {
		first, _, n, err := rd.Next()
		if err != nil {
			return nil // the flow may have ended
		}
		if first>>4 != wire.PUBLISH {
			return fmt.Errorf("churn %d/%d: packet type %d in the flow", w, i, first>>4)
		}
		rd.Release(n)
	}
	return nil
}

func TestEpollServeEndsWithItsListenerAndClosesConnections(t *testing.T) {
	addr, e, stop := startEpoll(t)
	c := connect(t, addr, "a")
	c.write(wire.AppendSubscribe(nil, 1, []wire.Sub{{Filter: "t"}}))
	c.expect(wire.SUBACK)
	if err := stop(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if _, _, err := c.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("client after Serve returned: %v, want EOF", err)
	}
	if st := e.Stats(); st.Conns != 0 {
		t.Fatalf("%d connections left open", st.Conns)
	}
}

// A subscriber that stops reading gets more than the limit waiting for it:
// the publisher is paused, not read, until the subscriber catches up, and
// then every message arrives once, intact and in order. The output waits in
// many chunks, so it is written with writev and EPOLLOUT.
func TestEpollSlowSubscriberPausesThePublisherAndLosesNothing(t *testing.T) {
	addr, e, _ := startEpoll(t)
	sub := connect(t, addr, "slow")
	sub.write(wire.AppendSubscribe(nil, 1, []wire.Sub{{Filter: "t", QoS: 0}}))
	sub.expect(wire.SUBACK)
	pub := connect(t, addr, "pub")

	// 32 MiB: more than the limit plus what the loopback sockets of both
	// connections hold.
	const count, size = 2048, 16 << 10
	msg := func(i int) []byte {
		p := make([]byte, size)
		for k := 0; k < size; k += 8 {
			binary.BigEndian.PutUint64(p[k:], uint64(i)<<20|uint64(k))
		}
		return p
	}
	pubErr := make(chan error, 1)
	go func() {
		var buf []byte
		for i := 0; i < count; i++ {
			buf = wire.AppendPublish(buf[:0], "t", 0, 0, msg(i))
			if _, err := pub.c.Write(buf); err != nil {
				pubErr <- fmt.Errorf("publishing message %d: %w", i, err)
				return
			}
		}
		pubErr <- nil
	}()

	for deadline := time.Now().Add(20 * time.Second); !e.Stats().PausedNow; {
		if time.Now().After(deadline) {
			t.Fatalf("the publisher was never paused: %v", e.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < count; i++ {
		first, body, err := sub.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		topic, _, payload, err := wire.ParsePublish(first, body)
		if first>>4 != wire.PUBLISH || err != nil || string(topic) != "t" || string(payload) != string(msg(i)) {
			t.Fatalf("message %d: type %d, %d bytes of payload, %v", i, first>>4, len(payload), err)
		}
	}
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if st.Pauses < 1 || st.PausedNow || st.Malformed+st.Failed+st.EpollErrors != 0 {
		t.Fatalf("stats: %v", st)
	}
	// Past the limit by at most one read and a held-over packet start.
	if st.PeakPending <= pendingLimit || st.PeakPending > pendingLimit+readSize+maxPacket {
		t.Fatalf("peak waiting %d bytes, want over the limit %d by at most %d", st.PeakPending, pendingLimit, readSize+maxPacket)
	}
}

// While nothing happens the loop waits in the runtime's poller (its
// goroutine is parked in IO wait), not in a blocking epoll_wait that would
// hold an OS thread in a system call.
func TestEpollIdleLoopWaitsInTheRuntimePoller(t *testing.T) {
	addr, _, _ := startEpoll(t)
	c := connect(t, addr, "a")
	c.write([]byte{wire.PINGREQ << 4, 0})
	c.expect(wire.PINGRESP)
	var state string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		state = loopState(t)
		if state == "IO wait" {
			return
		}
	}
	t.Fatalf("the idle loop's goroutine is in state %q, want \"IO wait\"", state)
}

// loopState returns the scheduling state of the loop's goroutine, as in a
// goroutine dump.
func loopState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	if err := pprof.Lookup("goroutine").WriteTo(&b, 2); err != nil {
		t.Fatal(err)
	}
	for _, g := range strings.Split(b.String(), "\n\n") {
		if !strings.Contains(g, "forward.(*loop).run(") {
			continue
		}
		head, _, _ := strings.Cut(g, "\n")
		_, st, ok := strings.Cut(head, "[")
		if !ok {
			t.Fatalf("goroutine header %q", head)
		}
		st, _, _ = strings.Cut(st, "]")
		st, _, _ = strings.Cut(st, ",") // ", N minutes"
		return st
	}
	t.Fatal("no goroutine runs the loop")
	return ""
}
