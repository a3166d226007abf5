package broker

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loop serves plain TCP connections accepted by the server's own
// listeners (EventLoop): one goroutine waits in epoll for all of them, reads
// whatever arrived, handles the packets and, once every ready connection has
// been handled, writes every output that this produced, one write per
// client. A connection costs no goroutine, so an idle client costs its conn
// and nothing else, and a message crosses the broker without waking or
// starting goroutines.
//
// Nothing on the loop may block. A CONNECT (authentication may be slow, a
// takeover waits for the old connection) is handled on a goroutine of its
// own, with the connection taken out of the loop until it is done; a
// publisher that must wait for a slow subscriber (SlowConsumerWait) hands
// the loop to a fresh goroutine first and finishes its packets as a plain
// goroutine (see conn.mayBlock). Keepalive, connect and write timeouts are
// checked by the loop every loopScan.
//
// A connection's socket is closed only by the goroutine that owns its reads
// (the loop, or the goroutine handling its CONNECT), once it is out of the
// epoll set; anybody else shuts it down (loopConn.Close), which the loop
// sees as the end of the connection.

const (
	loopBufSize = 64 << 10
	loopScan    = time.Second
	loopEvents  = 256
)

var errLoopConn = errors.New("broker: the event loop does the reads and writes of this connection")

// loopConn is the net.Conn of a connection the event loop serves: its
// socket, taken out of the Go runtime's poller.
type loopConn struct {
	// mu guards fd; the conn's outMu is taken first when both are.
	mu     sync.Mutex
	fd     int // -1 once closed
	shut   atomic.Bool
	remote net.Addr
	local  net.Addr
}

// newLoopConn takes tc's socket out of the runtime's poller: the duplicate
// keeps the socket (non-blocking, TCP_NODELAY, keepalive as the runtime set
// them) and closing tc removes the original from the runtime's epoll set, so
// that only the event loop wakes for it.
func newLoopConn(tc *net.TCPConn) (*loopConn, error) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	lc := &loopConn{fd: fd, remote: tc.RemoteAddr(), local: tc.LocalAddr()}
	tc.Close()
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	return lc, nil
}

func (lc *loopConn) Read([]byte) (int, error)         { return 0, errLoopConn }
func (lc *loopConn) Write([]byte) (int, error)        { return 0, errLoopConn }
func (lc *loopConn) LocalAddr() net.Addr              { return lc.local }
func (lc *loopConn) RemoteAddr() net.Addr             { return lc.remote }
func (lc *loopConn) SetDeadline(time.Time) error      { return nil }
func (lc *loopConn) SetReadDeadline(time.Time) error  { return nil }
func (lc *loopConn) SetWriteDeadline(time.Time) error { return nil }

// Close shuts the socket down; the owner of its reads closes it.
func (lc *loopConn) Close() error {
	lc.mu.Lock()
	lc.shutdownLocked()
	lc.mu.Unlock()
	return nil
}

func (lc *loopConn) shutdownLocked() {
	if lc.fd >= 0 && !lc.shut.Swap(true) {
		unix.Shutdown(lc.fd, unix.SHUT_RDWR)
	}
}

// release closes the socket of a connection that was never served.
func (lc *loopConn) release() {
	lc.mu.Lock()
	if lc.fd >= 0 {
		unix.Close(lc.fd)
		lc.fd = -1
	}
	lc.mu.Unlock()
}

// eventLoop is the server's epoll loop (see above).
type eventLoop struct {
	s    *Server
	ep   int
	wake int // eventfd: Shutdown's wake-up

	mu       sync.Mutex
	conns    map[int32]*conn // in the epoll set, by socket
	busy     bool            // the loop is handling events: output waits for its flush
	dirty    []*conn         // output to write when the loop has handled its events
	stopping bool
	runs     sync.WaitGroup

	pf *os.File        // the epoll descriptor in the runtime's poller
	rc syscall.RawConn // pf's

	handoffs atomic.Uint64 // the loop moved to a fresh goroutine (a publisher waits)
	detached atomic.Uint64 // connections handled off the loop for a while (CONNECT)
}

// loopRun is one goroutine running the loop; demoted once it handed the
// loop to a fresh goroutine.
type loopRun struct {
	buf     []byte
	evs     []unix.EpollEvent
	scan    []*conn // scratch for scan
	demoted bool

	// One wait in the runtime's poller (see wait); poll is bound once.
	l    *eventLoop
	poll func(uintptr) bool
	n    int
	err  error
}

// pollOnce collects the ready events without blocking; false makes the
// runtime wait until the epoll descriptor is readable.
func (me *loopRun) pollOnce(uintptr) bool {
	me.n, me.err = rawPoll(me.l.ep, me.evs)
	if me.err == unix.EINTR {
		return false
	}
	return me.n != 0 || me.err != nil
}

// wait waits for events until the deadline (since epoch).
func (l *eventLoop) wait(me *loopRun, deadline time.Duration) (int, error) {
	if l.rc == nil {
		timeout := int(max(deadline-time.Since(epoch), 0)/time.Millisecond) + 1
		return unix.EpollWait(l.ep, me.evs, timeout)
	}
	if me.poll == nil || me.l != l {
		me.l = l
		me.poll = me.pollOnce
	}
	me.n, me.err = 0, nil
	if err := l.rc.Read(me.poll); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil
		}
		return 0, err
	}
	return me.n, me.err
}

// loopRuns keeps the buffers of runs that ended (hand-offs come in bursts
// when subscribers fall behind).
var loopRuns = sync.Pool{New: func() any {
	return &loopRun{evs: make([]unix.EpollEvent, loopEvents)}
}}

func newEventLoop(s *Server) (*eventLoop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(ep)
		return nil, os.NewSyscallError("eventfd", err)
	}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(ep)
		unix.Close(wake)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	l := &eventLoop{s: s, ep: ep, wake: wake, conns: make(map[int32]*conn)}
	// The loop waits in the runtime's poller, which watches the epoll
	// descriptor, rather than in epoll_wait: while nothing happens every P
	// is then idle, so that on a one-core board the runtime is free to run
	// other goroutines without taking the P back from a blocked system call,
	// and its monitor sleeps instead of checking on that call many times a
	// second.
	if err := unix.SetNonblock(ep, true); err == nil {
		l.pf = os.NewFile(uintptr(ep), "epoll")
		if rc, err := l.pf.SyscallConn(); err == nil {
			l.rc = rc
		}
	}
	l.runs.Add(1)
	go l.run()
	return l, nil
}

// close stops the loop once its connections are gone and frees it.
func (l *eventLoop) close() {
	l.mu.Lock()
	l.stopping = true
	l.mu.Unlock()
	l.poke()
	l.runs.Wait()
	if l.pf != nil {
		l.pf.Close()
	} else {
		unix.Close(l.ep)
	}
	unix.Close(l.wake)
}

func (l *eventLoop) poke() {
	var one = [8]byte{1}
	unix.Write(l.wake, one[:])
}

// attach puts c (its reads) in the loop.
func (l *eventLoop) attach(c *conn) {
	c.lastRead = time.Since(epoch)
	// outMu is held until the socket is in the epoll set, so that a flush
	// turning the write watch on (watch) cannot come in between.
	c.outMu.Lock()
	ev := uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	if c.wantOut {
		ev |= unix.EPOLLOUT
	}
	fd := int32(c.lc.fd) // only the owner of the reads closes it: stable here
	l.mu.Lock()
	l.conns[fd] = c
	l.mu.Unlock()
	err := unix.EpollCtl(l.ep, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: ev, Fd: fd})
	c.outMu.Unlock()
	if err != nil {
		// Cannot happen for an open socket; end the connection rather
		// than leave it unread.
		l.s.log.Warn("broker: event loop cannot watch a connection", "remote", c.remote(), "err", err)
		l.mu.Lock()
		delete(l.conns, fd)
		l.mu.Unlock()
		l.end(c, err)
	}
}

// detach takes c out of the loop: its owner now is the caller.
func (l *eventLoop) detach(c *conn) {
	fd := int32(c.lc.fd)
	l.mu.Lock()
	delete(l.conns, fd)
	l.mu.Unlock()
	unix.EpollCtl(l.ep, unix.EPOLL_CTL_DEL, int(fd), nil)
}

// end finishes a detached connection: last output, session and will,
// socket.
func (l *eventLoop) end(c *conn, err error) {
	if err != nil {
		c.readError(err)
	}
	c.finish()
	c.outMu.Lock()
	if c.outP != nil && len(*c.outP) > 0 && c.lc.fd >= 0 && !c.lc.shut.Load() {
		// Best effort: what the socket takes now goes out before the FIN
		// (a refusing CONNACK, a DISCONNECT with its reason).
		if n, _ := rawWrite(c.lc.fd, *c.outP); n > 0 {
			c.s.stats.bytesSent.Add(uint64(n))
		}
	}
	c.writing = false
	c.dropOutputLocked()
	c.lc.mu.Lock()
	if c.lc.fd >= 0 {
		unix.Close(c.lc.fd)
		c.lc.fd = -1
	}
	c.lc.mu.Unlock()
	c.outMu.Unlock()
	c.in = nil
	c.s.wg.Done()
}

// kickLocked gets c's pending output written: at the end of the loop's
// round when the loop is handling events (the round's output to one client
// goes out in one write), at once otherwise. The caller holds c.outMu.
func (l *eventLoop) kickLocked(c *conn) {
	if c.outP == nil || len(*c.outP) == 0 {
		return
	}
	c.writing = true // whoever closes leaves it to the flush
	if c.dirty || c.wantOut {
		return // a flush is coming
	}
	l.mu.Lock()
	if l.busy {
		c.dirty = true
		l.dirty = append(l.dirty, c)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	c.flushLocked()
}

// flushLocked writes c's pending output with one non-blocking write. What
// the socket does not take waits for it to become writable (EPOLLOUT).
func (c *conn) flushLocked() {
	lc := c.lc
	if c.outP == nil || len(*c.outP) == 0 {
		c.writing = false
		if c.flushClose {
			lc.mu.Lock()
			lc.shutdownLocked()
			lc.mu.Unlock()
		}
		return
	}
	if lc.fd < 0 || lc.shut.Load() {
		c.writing = false
		c.dropOutputLocked()
		return
	}
	p := *c.outP
	n, err := rawWrite(lc.fd, p)
	if n > 0 {
		c.s.stats.bytesSent.Add(uint64(n))
		if c.wantOut {
			// Progress on a backed-up socket: the write timeout counts
			// from here (only then is it checked).
			c.wrote = time.Since(epoch)
		}
		// Progress: the client is reading.
		c.stalled = false
		if c.waiters > 0 {
			c.wakeLocked()
		}
	}
	switch {
	case n == len(p):
		putOut(c.outP)
		c.outP = nil
		c.writing = false
		if c.wantOut {
			c.wantOut = false
			c.s.loop.watch(c, false)
		}
		if c.flushClose {
			lc.mu.Lock()
			lc.shutdownLocked()
			lc.mu.Unlock()
		}
	case n > 0 || err == unix.EAGAIN || err == unix.EINTR:
		if n > 0 {
			*c.outP = p[:copy(p, p[n:])]
		}
		if !c.wantOut {
			c.wantOut = true
			c.wrote = time.Since(epoch) // the write timeout counts from here
			c.s.loop.watch(c, true)
		}
	default:
		// The client is gone: the loop sees the shut-down socket and ends
		// the connection.
		c.writing = false
		c.dropOutputLocked()
		lc.mu.Lock()
		lc.shutdownLocked()
		lc.mu.Unlock()
	}
}

// watch turns the loop's write watch on c on or off. A detached connection
// is not in the epoll set: attach applies wantOut when it comes back.
func (l *eventLoop) watch(c *conn, out bool) {
	ev := uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	if out {
		ev |= unix.EPOLLOUT
	}
	unix.EpollCtl(l.ep, unix.EPOLL_CTL_MOD, c.lc.fd, &unix.EpollEvent{Events: ev, Fd: int32(c.lc.fd)})
}

// flushDirty writes the output of the round and ends it.
func (l *eventLoop) flushDirty() {
	for {
		l.mu.Lock()
		d := l.dirty
		if len(d) == 0 {
			l.busy = false
			l.mu.Unlock()
			return
		}
		l.dirty = nil
		l.mu.Unlock()
		for i, c := range d {
			c.outMu.Lock()
			c.dirty = false
			c.flushLocked()
			c.outMu.Unlock()
			d[i] = nil
		}
		l.mu.Lock()
		if l.dirty == nil {
			l.dirty = d[:0] // reuse the slice
		}
		l.mu.Unlock()
	}
}

func (l *eventLoop) run() {
	defer l.runs.Done()
	me := loopRuns.Get().(*loopRun)
	me.demoted = false
	defer loopRuns.Put(me)
	evs := me.evs
	// Scan often enough for the connect timeout too.
	every := min(loopScan, max(l.s.cfg.ConnectTimeout/2, 10*time.Millisecond))
	nextScan := time.Since(epoch) + every
	if l.pf != nil {
		l.pf.SetReadDeadline(epoch.Add(nextScan))
	}
	for {
		l.mu.Lock()
		if l.stopping && len(l.conns) == 0 {
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		n, err := l.wait(me, nextScan)
		if err != nil && err != unix.EINTR {
			l.s.log.Error("broker: event loop wait failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Since(epoch)
		l.mu.Lock()
		l.busy = true
		l.mu.Unlock()
		for i := 0; i < n; i++ {
			fd := evs[i].Fd
			if int(fd) == l.wake {
				var b [8]byte
				unix.Read(l.wake, b[:])
				continue
			}
			l.mu.Lock()
			c := l.conns[fd]
			l.mu.Unlock()
			if c == nil {
				continue
			}
			ev := evs[i].Events
			if ev&unix.EPOLLOUT != 0 {
				c.outMu.Lock()
				if c.wantOut {
					c.flushLocked()
				}
				c.outMu.Unlock()
			}
			if ev&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				l.read(me, c, now)
				if me.demoted {
					// This goroutine finished c's packets as a plain
					// goroutine; a fresh one runs the loop.
					return
				}
			}
		}
		if now >= nextScan {
			l.scan(me, now)
			nextScan = now + every
			if l.pf != nil {
				l.pf.SetReadDeadline(epoch.Add(nextScan))
			}
		}
		l.flushDirty()
	}
}

// read reads what arrived for c and handles every complete packet.
func (l *eventLoop) read(me *loopRun, c *conn, now time.Duration) {
	if c.lc.shut.Load() {
		l.detach(c)
		l.end(c, nil)
		return
	}
	if me.buf == nil {
		// Made at the first read, not at start-up: a gateway without
		// clients does not keep it in memory.
		me.buf = make([]byte, loopBufSize)
	}
	k := len(c.in)
	var data []byte
	var m int
	var err error
	if c.need > len(me.buf) {
		// A packet larger than the loop's buffer: gather it in its own.
		if cap(c.in) < c.need {
			nb := make([]byte, k, c.need)
			copy(nb, c.in)
			c.in = nb
		}
		m, err = rawRead(c.lc.fd, c.in[k:cap(c.in)])
		if m > 0 {
			data = c.in[:k+m]
		}
	} else {
		copy(me.buf, c.in)
		m, err = rawRead(c.lc.fd, me.buf[k:])
		if m > 0 {
			data = me.buf[:k+m]
		}
	}
	if m <= 0 {
		if err == unix.EAGAIN || err == unix.EINTR {
			return
		}
		if err == nil {
			err = io.EOF
		}
		l.detach(c)
		l.end(c, err)
		return
	}
	c.lastRead = now
	c.s.stats.bytesRecv.Add(uint64(m))
	c.onLoop, c.lrun = true, me
	off, ok, connect := c.consume(data)
	c.onLoop, c.lrun = false, nil
	if !ok {
		l.detach(c)
		l.end(c, nil)
		return
	}
	if connect {
		// CONNECT is handled on a goroutine of its own, out of the loop.
		rest := append([]byte(nil), data[off:]...)
		c.in = nil
		l.detach(c)
		l.detached.Add(1)
		go c.serveDetached(rest)
		return
	}
	c.keep(data[off:])
	if me.demoted {
		// A publisher waited, on this goroutine, after handing the loop
		// on (mayBlock); its connection comes back into the loop now.
		l.attach(c)
	}
}

// keep saves the unhandled start of a packet for the next read.
func (c *conn) keep(rest []byte) {
	if len(rest) == 0 {
		c.in, c.need = nil, 0
		c.releaseDecoder()
		return
	}
	if cap(c.in) > 0 && &c.in[:1][0] == &rest[0] {
		c.in = rest // already in place (a large packet's own buffer)
		return
	}
	if len(rest) <= smallReadSize {
		c.in = c.small[:copy(c.small[:], rest)]
		return
	}
	size := len(rest)
	if c.need > loopBufSize {
		size = c.need // read into directly (see read)
	}
	c.in = append(make([]byte, 0, size), rest...)
}

// serveDetached handles a CONNECT, and whatever followed it, off the loop,
// then gives the connection back to it.
func (c *conn) serveDetached(data []byte) {
	l := c.s.loop
	off, ok, _ := c.consume(data)
	if !ok {
		l.end(c, nil)
		return
	}
	c.keep(data[off:])
	if !c.connected {
		// Refused: the refusal closes the connection.
		l.end(c, nil)
		return
	}
	l.attach(c)
}

// mayBlock is called before a wait: on the loop, the loop first moves to a
// fresh goroutine, with what this round produced written out, and c out of
// the loop until this goroutine has handled the packets it read.
func (c *conn) mayBlock() {
	if !c.onLoop {
		return
	}
	l := c.s.loop
	c.onLoop = false
	c.lrun.demoted = true
	l.detach(c)
	l.handoffs.Add(1)
	l.flushDirty()
	l.runs.Add(1)
	go l.run()
}

// scan ends the connections whose keepalive, connect or write time is up.
// It runs on the loop: the connections in the loop stay there meanwhile.
func (l *eventLoop) scan(me *loopRun, now time.Duration) {
	var expired []*conn
	connectTimeout := l.s.cfg.ConnectTimeout
	writeTimeout := l.s.cfg.WriteTimeout
	l.mu.Lock()
	all := me.scan[:0]
	for _, c := range l.conns {
		all = append(all, c)
	}
	l.mu.Unlock()
	defer func() {
		clear(all) // the pool must not keep connections alive
		me.scan = all[:0]
	}()
	for _, c := range all {
		switch {
		case !c.connected:
			if now-c.kaSet > connectTimeout {
				expired = append(expired, c)
			}
		case c.keepAlive > 0 && now-c.lastRead > c.keepAlive*3/2:
			expired = append(expired, c)
		default:
			c.outMu.Lock()
			stuck := c.wantOut && now-c.wrote > writeTimeout
			c.outMu.Unlock()
			if stuck {
				c.s.log.Info("broker: write timeout", "client", c.clientID(), "remote", c.remote())
				c.closeNow()
			}
		}
	}
	for _, c := range expired {
		l.detach(c)
		l.end(c, os.ErrDeadlineExceeded)
	}
}

// served is how many connections are in the loop.
func (l *eventLoop) served() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// loopStats reports the loop's hand-offs.
func (l *eventLoop) stats() (handoffs, detached uint64) {
	if l == nil {
		return 0, 0
	}
	return l.handoffs.Load(), l.detached.Load()
}

// System calls on non-blocking descriptors, made without telling the
// scheduler: they never block, and a system call the scheduler is told of
// wakes the runtime's monitor when it sleeps, which then polls every 20 µs
// for a while; at a few thousand messages a second that polling would cost
// more than the messages.

func rawRead(fd int, p []byte) (int, error) { return rawIO(unix.SYS_READ, fd, p) }

func rawWrite(fd int, p []byte) (int, error) { return rawIO(unix.SYS_WRITE, fd, p) }

// rawIO is read(2) or write(2): -1 and the error, or the count.
func rawIO(trap uintptr, fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
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
