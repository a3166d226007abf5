//go:build linux

package forward

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"gatewayd/scripts/bench/internal/wire"
)

// Epoll is the forwarder on one epoll loop in one goroutine, with the same
// contract as Serve. Accepted connections are taken out of Go's netpoller
// (the descriptor is duplicated and the net.Conn closed), so the runtime
// never wakes for them one by one. The loop waits in the runtime's poller on
// its epoll descriptor, the only descriptor the runtime watches for it, and
// then collects the ready connections with an epoll_pwait that does not
// wait; that call and every read, write, writev and epoll_ctl of the loop
// are raw system calls, which the scheduler does not see (see rawRead).
// Every connection is watched level-triggered for input; each round reads
// once (up to 64 KiB) from every ready connection, appends every complete
// PUBLISH to every subscriber's output and then writes every connection with
// output once (one write or writev).
// Output waits in a list of 64 KiB chunks, reused once written, so it is
// never moved or grown; EPOLLOUT is watched only while some is left after a
// write.
//
// While any subscriber has more than the limit (pendingLimit, 8 MiB) waiting,
// connections that have published are not read (their EPOLLIN interest is
// removed) until every subscriber is back under half the limit: nothing is
// lost, and what waits for a subscriber passes the limit by at most one read
// (64 KiB, plus the start of a packet held over from the read before) and one
// more from each connection that publishes for the first time during a
// pause.
//
// The zero value is ready to use; Serve must be called at most once.
type Epoll struct {
	ep, wake int
	pf       *os.File        // ep in the runtime's poller; nil if it could not be put there
	rc       syscall.RawConn // pf's

	mu       sync.Mutex
	incoming []int // accepted descriptors for the loop to take
	closing  bool

	// Counters, written by the loop.
	conns       atomic.Int64
	accepted    atomic.Uint64
	malformed   atomic.Uint64
	failed      atomic.Uint64
	epollErrors atomic.Uint64
	bytesIn     atomic.Uint64
	pubBytesIn  atomic.Uint64
	peakPending atomic.Int64
	pauses      atomic.Uint64
	paused      atomic.Bool
}

// EpollStats are an Epoll's counters.
type EpollStats struct {
	Conns        int64  // connections open now
	Accepted     uint64 // connections accepted in all
	Malformed    uint64 // connections closed for a packet that cannot be framed
	Failed       uint64 // accepted connections closed because their descriptor could not be taken over
	EpollErrors  uint64 // failed changes of a connection's epoll interest
	BytesIn      uint64 // bytes read from all connections
	PubBytesIn   uint64 // bytes read from connections that have published
	PeakPending  int64  // most bytes that ever waited for one connection
	Pauses       uint64 // times publishers stopped being read for a subscriber over the limit
	PausedNow    bool   // publishers are not being read now
	PendingLimit int64  // the limit that pauses publishers
}

// Stats returns the counters; safe to call at any time.
func (e *Epoll) Stats() EpollStats {
	return EpollStats{
		Conns:        e.conns.Load(),
		Accepted:     e.accepted.Load(),
		Malformed:    e.malformed.Load(),
		Failed:       e.failed.Load(),
		EpollErrors:  e.epollErrors.Load(),
		BytesIn:      e.bytesIn.Load(),
		PubBytesIn:   e.pubBytesIn.Load(),
		PeakPending:  e.peakPending.Load(),
		Pauses:       e.pauses.Load(),
		PausedNow:    e.paused.Load(),
		PendingLimit: pendingLimit,
	}
}

func (s EpollStats) String() string {
	return fmt.Sprintf("%d connections open, %d accepted, %d closed for malformed packets, %d not taken over, %d epoll_ctl failures, "+
		"%d bytes read (%d from publishers), peak %d bytes waiting for one connection (limit %d), publishers paused %d times",
		s.Conns, s.Accepted, s.Malformed, s.Failed, s.EpollErrors, s.BytesIn, s.PubBytesIn, s.PeakPending, s.PendingLimit, s.Pauses)
}

// ServeEpoll runs an Epoll on ln until accepting fails.
func ServeEpoll(ln net.Listener) error {
	var e Epoll
	return e.Serve(ln)
}

// Serve accepts connections on ln and forwards between them until accepting
// fails (for instance because ln was closed); it then closes every
// connection, waits for the loop to end and returns the accept error.
func (e *Epoll) Serve(ln net.Listener) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(ep)
		return fmt.Errorf("eventfd: %w", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake), Pad: -1}); err != nil {
		unix.Close(wake)
		unix.Close(ep)
		return fmt.Errorf("epoll_ctl eventfd: %w", err)
	}
	e.ep, e.wake = ep, wake
	// The loop waits in the runtime's poller rather than in epoll_wait: a
	// goroutine blocked in a system call keeps an OS thread and wakes the
	// runtime's monitor. Without the poller the loop falls back to
	// epoll_wait.
	if err := unix.SetNonblock(ep, true); err == nil {
		e.pf = os.NewFile(uintptr(ep), "epoll")
		if rc, err := e.pf.SyscallConn(); err == nil {
			e.rc = rc
		}
	}
	l := &loop{e: e, buf: make([]byte, readSize), iov: make([]unix.Iovec, 0, 64), evs: make([]unix.EpollEvent, 256)}
	done := make(chan error, 1)
	go func() { done <- l.run() }()

	var aerr error
	for {
		c, err := ln.Accept()
		if err != nil {
			aerr = err
			break
		}
		fd, err := detach(c)
		if err != nil {
			e.failed.Add(1) // c is closed: its client sees the connection end
			continue
		}
		e.mu.Lock()
		e.incoming = append(e.incoming, fd)
		e.mu.Unlock()
		e.signal()
	}
	e.mu.Lock()
	e.closing = true
	e.mu.Unlock()
	e.signal()
	if lerr := <-done; lerr != nil {
		aerr = errors.Join(aerr, lerr)
	}
	e.mu.Lock()
	for _, fd := range e.incoming {
		unix.Close(fd)
	}
	e.incoming = nil
	e.mu.Unlock()
	unix.Close(wake)
	if e.pf != nil {
		e.pf.Close()
	} else {
		unix.Close(ep)
	}
	return aerr
}

// detach returns a non-blocking duplicate of c's descriptor and closes c,
// which takes the socket out of Go's netpoller (the socket itself stays open
// through the duplicate).
func detach(c net.Conn) (int, error) {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("accepted %T has no descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, fmt.Errorf("dup accepted socket: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// signal wakes the loop.
func (e *Epoll) signal() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = rawWrite(e.wake, one[:])
}

// System calls on non-blocking descriptors are made as raw system calls,
// without telling the scheduler: they never block, and a system call the
// scheduler is told of wakes the runtime's monitor (sysmon) when it sleeps,
// which then polls every 20 µs for a while; at a few thousand messages a
// second that polling would cost more than the forwarding.

func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawWritev(fd int, iov []unix.Iovec) (int, error) {
	if len(iov) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawPoll collects ready events without waiting.
func rawPoll(ep int, evs []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func rawCtl(ep, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

const (
	readSize = 64 << 10
	// maxPacket is the largest packet framed, as for Serve's read buffer.
	maxPacket = 256 << 10
)

type econn struct {
	fd     int
	gen    int32
	closed bool
	in     []byte   // start of a packet not yet complete
	out    [][]byte // chunks waiting to be written, from out[0][head:]
	head   int
	pend   int  // bytes waiting
	sub    bool // has subscribed: gets every PUBLISH
	pub    bool // has published: not read while a subscriber is over the limit
	dirty  bool // in the loop's list of connections to write this round
	over   bool // more than the limit waits for it
	events uint32
}

func (c *econn) pending() int { return c.pend }

// chunkSize is the unit of output buffers: output is a list of chunks, so it
// is never moved or grown, and written chunks are reused.
const chunkSize = 64 << 10

// maxFree is how many written chunks the loop keeps for reuse.
const maxFree = 256

// put appends b to c's output.
func (l *loop) put(c *econn, b []byte) {
	for len(b) > 0 {
		n := len(c.out)
		if n == 0 || len(c.out[n-1]) == cap(c.out[n-1]) {
			c.out = append(c.out, l.chunk())
			n++
		}
		t := c.out[n-1]
		k := copy(t[len(t):cap(t)], b)
		c.out[n-1] = t[:len(t)+k]
		b = b[k:]
		c.pend += k
	}
	l.mark(c)
}

func (l *loop) chunk() []byte {
	if n := len(l.free); n > 0 {
		ch := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		return ch
	}
	return make([]byte, 0, chunkSize)
}

func (l *loop) release(ch []byte) {
	if len(l.free) < maxFree {
		l.free = append(l.free, ch[:0])
	}
}

// write writes as much of c's output as the socket takes, in one system
// call, and releases the chunks written.
func (l *loop) write(c *econn) error {
	var n int
	var err error
	if len(c.out) == 1 {
		n, err = rawWrite(c.fd, c.out[0][c.head:])
	} else {
		iov := l.iov[:0]
		for i, ch := range c.out {
			if i == 0 {
				ch = ch[c.head:]
			}
			if len(iov) == cap(iov) {
				break
			}
			if len(ch) == 0 {
				continue
			}
			v := unix.Iovec{Base: &ch[0]}
			v.SetLen(len(ch))
			iov = append(iov, v)
		}
		n, err = rawWritev(c.fd, iov)
		clear(iov)
	}
	if n <= 0 {
		if err == unix.EAGAIN || err == unix.EINTR {
			return nil
		}
		return err
	}
	c.pend -= n
	n += c.head
	done := 0
	for done < len(c.out) && n >= len(c.out[done]) && (n > 0 || len(c.out[done]) == 0) {
		n -= len(c.out[done])
		l.release(c.out[done])
		c.out[done] = nil
		done++
	}
	if done > 0 {
		c.out = c.out[:copy(c.out, c.out[done:])]
	}
	c.head = n
	return nil
}

// loop is the state of the epoll loop, owned by its goroutine.
type loop struct {
	e       *Epoll
	buf     []byte
	scratch []byte
	free    [][]byte // written chunks for reuse
	iov     []unix.Iovec
	evs     []unix.EpollEvent
	conns   []*econn // by descriptor
	subs    []*econn
	pubs    []*econn
	dirty   []*econn
	nOver   int // subscribers over the limit
	gen     int32
	peak    int

	// One wait in the runtime's poller (see wait).
	poll func(uintptr) bool
	n    int
	err  error
}

// pollOnce collects the ready events without waiting; false (none) makes
// the runtime wait until the epoll descriptor is readable.
func (l *loop) pollOnce(uintptr) bool {
	for {
		l.n, l.err = rawPoll(l.e.ep, l.evs)
		if l.err != unix.EINTR {
			return l.n != 0 || l.err != nil
		}
	}
}

// wait waits for events and returns how many are in l.evs.
func (l *loop) wait() (int, error) {
	if l.e.rc == nil {
		for {
			n, err := unix.EpollWait(l.e.ep, l.evs, -1)
			if err != unix.EINTR {
				return n, err
			}
		}
	}
	if l.poll == nil {
		l.poll = l.pollOnce // bound once, not per round
	}
	l.n, l.err = 0, nil
	if err := l.e.rc.Read(l.poll); err != nil {
		return 0, err
	}
	return l.n, l.err
}

func (l *loop) run() error {
	evs := l.evs
	for {
		n, err := l.wait()
		if err != nil {
			l.closeAll()
			return fmt.Errorf("epoll_pwait: %w", err)
		}
		closing := false
		for i := 0; i < n; i++ {
			ev := &evs[i]
			if ev.Pad == -1 && int(ev.Fd) == l.e.wake {
				closing = l.takeIncoming() || closing
				continue
			}
			fd := int(ev.Fd)
			if fd < 0 || fd >= len(l.conns) {
				continue
			}
			c := l.conns[fd]
			if c == nil || c.gen != ev.Pad {
				continue // closed in this round, or a stale event
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				l.mark(c)
			}
			hup := ev.Events&(unix.EPOLLHUP|unix.EPOLLERR) != 0
			if ev.Events&unix.EPOLLIN != 0 || hup {
				// A publisher may still be ready from before a pause in this
				// round; it waits, unless its socket failed.
				if c.pub && l.nOver > 0 && !hup {
					continue
				}
				l.read(c)
			}
		}
		l.flush()
		if closing {
			l.closeAll()
			return nil
		}
	}
}

// takeIncoming registers the accepted connections and reports whether the
// server is closing.
func (l *loop) takeIncoming() bool {
	var cnt [8]byte
	_, _ = rawRead(l.e.wake, cnt[:])
	l.e.mu.Lock()
	fds := l.e.incoming
	l.e.incoming = nil
	closing := l.e.closing
	l.e.mu.Unlock()
	for _, fd := range fds {
		l.gen++
		if l.gen < 0 {
			l.gen = 0
		}
		c := &econn{fd: fd, gen: l.gen, events: unix.EPOLLIN}
		if err := rawCtl(l.e.ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: c.events, Fd: int32(fd), Pad: c.gen}); err != nil {
			unix.Close(fd)
			l.e.failed.Add(1)
			continue
		}
		for fd >= len(l.conns) {
			l.conns = append(l.conns, nil)
		}
		l.conns[fd] = c
		l.e.accepted.Add(1)
		l.e.conns.Add(1)
	}
	return closing
}

func (l *loop) read(c *econn) {
	n, err := rawRead(c.fd, l.buf)
	if n <= 0 {
		if err == unix.EAGAIN || err == unix.EINTR {
			return
		}
		l.drop(c) // end of stream or a failed socket
		return
	}
	l.e.bytesIn.Add(uint64(n))
	if c.pub {
		l.e.pubBytesIn.Add(uint64(n))
	}
	data := l.buf[:n]
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	rest, ok := l.handle(c, data)
	if !ok {
		l.e.malformed.Add(1)
		l.drop(c)
		return
	}
	if c.closed {
		return
	}
	// Keep the start of an incomplete packet (rest may alias c.in: copy
	// moves it down).
	c.in = append(c.in[:0], rest...)
	if len(c.in) == 0 && cap(c.in) > readSize {
		c.in = nil
	}
}

// frame returns the first byte and total length of the packet at the start
// of b; total is 0 when b holds only part of it, -1 when it cannot be framed.
func frame(b []byte) (first byte, hdr, total int) {
	if len(b) < 2 {
		return 0, 0, 0
	}
	rem, mul := 0, 1
	for i := 1; ; i++ {
		if i > 4 {
			return 0, 0, -1
		}
		if i >= len(b) {
			return 0, 0, 0
		}
		rem += int(b[i]&0x7f) * mul
		mul *= 128
		if b[i]&0x80 == 0 {
			hdr = i + 1
			break
		}
	}
	total = hdr + rem
	if total > maxPacket {
		return 0, 0, -1
	}
	if len(b) < total {
		return 0, 0, 0
	}
	return b[0], hdr, total
}

// handle acts on every complete packet in data and returns what is left of
// it; false for a packet that cannot be framed or parsed.
func (l *loop) handle(c *econn, data []byte) ([]byte, bool) {
	off, span := 0, -1 // data[span:off] is a run of PUBLISH packets
	for {
		first, hdr, total := frame(data[off:])
		if total < 0 {
			return nil, false
		}
		if total == 0 {
			break
		}
		p := data[off : off+total]
		body := p[hdr:]
		if first>>4 == wire.PUBLISH {
			if span < 0 {
				span = off
			}
			if (first>>1)&3 > 0 {
				_, id, _, err := wire.ParsePublish(first, body)
				if err != nil {
					return nil, false
				}
				l.scratch = wire.AppendPuback(l.scratch[:0], id)
				l.put(c, l.scratch)
			}
			if !c.pub {
				c.pub = true
				l.pubs = append(l.pubs, c)
				l.interest(c)
			}
			off += total
			continue
		}
		if span >= 0 {
			l.fanout(data[span:off])
			span = -1
		}
		switch first >> 4 {
		case wire.CONNECT:
			l.scratch = wire.AppendConnack(l.scratch[:0])
			l.put(c, l.scratch)
		case wire.SUBSCRIBE:
			if len(body) < 2 {
				return nil, false
			}
			id := binary.BigEndian.Uint16(body)
			var granted []byte
			for rest := body[2:]; len(rest) >= 3; {
				n := int(binary.BigEndian.Uint16(rest))
				if len(rest) < 3+n {
					return nil, false
				}
				granted = append(granted, rest[2+n])
				rest = rest[3+n:]
			}
			// The SUBACK is queued before the connection joins the
			// subscribers, so it precedes every PUBLISH copied to it.
			l.scratch = wire.AppendSuback(l.scratch[:0], id, granted)
			l.put(c, l.scratch)
			if !c.sub {
				c.sub = true
				l.subs = append(l.subs, c)
			}
		case wire.PINGREQ:
			l.put(c, []byte{wire.PINGRESP << 4, 0})
		case wire.DISCONNECT:
			l.drop(c)
			return nil, true
		}
		off += total
	}
	if span >= 0 {
		l.fanout(data[span:off])
	}
	return data[off:], true
}

// fanout appends b to every subscriber's output; a subscriber that goes over
// the limit pauses the publishers.
func (l *loop) fanout(b []byte) {
	for _, s := range l.subs {
		l.put(s, b)
		p := s.pending()
		if p > l.peak {
			l.peak = p
			l.e.peakPending.Store(int64(p))
		}
		if !s.over && p > pendingLimit {
			s.over = true
			l.nOver++
			if l.nOver == 1 {
				l.e.pauses.Add(1)
				l.e.paused.Store(true)
				l.pubsInterest()
			}
		}
	}
}

// under takes s off the over-limit count, resuming the publishers when it
// was the last.
func (l *loop) under(s *econn) {
	s.over = false
	l.nOver--
	if l.nOver == 0 {
		l.e.paused.Store(false)
		l.pubsInterest()
	}
}

func (l *loop) pubsInterest() {
	for _, c := range l.pubs {
		l.interest(c)
	}
}

func (l *loop) mark(c *econn) {
	if !c.dirty {
		c.dirty = true
		l.dirty = append(l.dirty, c)
	}
}

// interest updates c's epoll interest: input unless it is a paused
// publisher, output while some waits after a write.
func (l *loop) interest(c *econn) {
	if c.closed {
		return
	}
	var want uint32
	if !(c.pub && l.nOver > 0) {
		want |= unix.EPOLLIN
	}
	if c.pending() > 0 && !c.dirty {
		want |= unix.EPOLLOUT
	}
	if want == c.events {
		return
	}
	if err := rawCtl(l.e.ep, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: want, Fd: int32(c.fd), Pad: c.gen}); err != nil {
		// Cannot happen for a registered descriptor; counted, and the
		// connection keeps its old interest.
		l.e.epollErrors.Add(1)
		return
	}
	c.events = want
}

// flush writes every connection with output once.
func (l *loop) flush() {
	// drop (from a failed write) or interest may not append to l.dirty while
	// it is walked: neither marks a connection.
	for i := 0; i < len(l.dirty); i++ {
		c := l.dirty[i]
		c.dirty = false
		if c.closed {
			continue
		}
		if c.pending() > 0 {
			if err := l.write(c); err != nil {
				l.drop(c)
				continue
			}
			if c.over && c.pending() <= pendingLimit/2 {
				l.under(c)
			}
		}
		l.interest(c)
	}
	clear(l.dirty)
	l.dirty = l.dirty[:0]
}

// drop closes c and forgets it; events and list entries still naming it are
// skipped by its closed flag and generation.
func (l *loop) drop(c *econn) {
	if c.closed {
		return
	}
	c.closed = true
	_ = rawCtl(l.e.ep, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd)
	l.conns[c.fd] = nil
	l.e.conns.Add(-1)
	if c.sub {
		l.subs = remove(l.subs, c)
	}
	if c.pub {
		l.pubs = remove(l.pubs, c)
	}
	if c.over {
		l.under(c)
	}
	for _, ch := range c.out {
		l.release(ch)
	}
	c.in, c.out, c.head, c.pend = nil, nil, 0, 0
}

func remove(list []*econn, c *econn) []*econn {
	for i, o := range list {
		if o == c {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			return list[:len(list)-1]
		}
	}
	return list
}

func (l *loop) closeAll() {
	for _, c := range l.conns {
		if c != nil {
			l.drop(c)
		}
	}
}
