package broker

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"gatewayd/broker/packet"
)

// Read buffers. An idle connection blocks on a small buffer inside its conn;
// a busy one borrows a larger buffer and a decoder from a pool and gives them
// back as soon as every byte read has been handled, so thousands of idle
// clients cost a few hundred bytes each rather than tens of KiB.
const (
	smallReadSize = 224
	bigReadSize   = 32 << 10
	// maxPooledOut is the largest output buffer kept for reuse; a buffer grown
	// by a burst beyond it is left to the garbage collector.
	maxPooledOut = 64 << 10
	// idleHandoff is how long a plain TCP reader that has handled packets
	// waits for more before it hands the connection to a fresh goroutine
	// (see resume).
	idleHandoff = 250 * time.Millisecond
)

var (
	bigReadBufs = sync.Pool{New: func() any { b := make([]byte, bigReadSize); return &b }}
	outBufs     = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
	decoders    = sync.Pool{New: func() any { return new(packet.Decoder) }}

	// epoch is the monotonic origin of conn.kaSet.
	epoch = time.Now()

	// readerHandoffs counts idle connections handed to a fresh reader
	// goroutine.
	readerHandoffs atomic.Uint64
)

// conn is one client connection: the reader goroutine's state and the output
// buffer that anyone may append to.
type conn struct {
	s  *Server
	nc net.Conn
	l  *listener
	// tlsState is the TLS state of a connection that is not a *tls.Conn
	// itself (wss); set before serve.
	tlsState *tls.ConnectionState

	// Owned by the reader goroutine.
	small      [smallReadSize]byte
	bigP       *[]byte         // pooled read buffer while traffic flows
	dec        *packet.Decoder // pooled while traffic flows
	keepAlive  time.Duration
	kaSet      time.Duration // when the keepalive read deadline was last moved, since epoch
	ci         *ConnectInfo
	sess       *session
	inAliases  []string       // v5 inbound topic aliases, index = alias
	decVersion packet.Version // survives giving the decoder back
	connected  bool
	// overLimit: the connection is beyond max_connections and is refused
	// at CONNECT.
	overLimit   bool
	problemInfo bool // v5 Request Problem Information (default 1)
	normal      bool // ended by the client's DISCONNECT without will
	sendWill    bool // DISCONNECT 0x04: publish the will anyway
	handoff     bool // idle reads move to a fresh goroutine (plain TCP)

	// will is the connection's will; whoever takes it (the reader when the
	// connection ends, or a takeover) decides its fate.
	will atomic.Pointer[pendingWill]
	// inflightIn counts QoS 1/2 PUBLISH received and not yet acknowledged,
	// for the v5 Receive Maximum the broker announced.
	inflightIn atomic.Int32

	// outMu guards everything below: the output side, shared by every
	// goroutine that delivers to this client.
	outMu      sync.Mutex
	outP       *[]byte // encoded packets waiting for the writer; nil when none
	writing    bool    // a writer goroutine is running
	closed     bool    // accepts no more output
	flushClose bool    // the writer closes nc once the output is written
	version    packet.Version
	maxOut     int    // client's Maximum Packet Size; 0 no limit
	aliasMax   uint16 // client's Topic Alias Maximum
	aliases    map[string]uint16
	nextAlias  uint16
	// Backpressure (see SlowConsumerWait): stalled drops QoS 0 messages
	// that do not fit without waiting; waiters routing goroutines wait on
	// room, which gets a token whenever the writer makes room.
	stalled bool
	noRaw   bool // nc has no raw file descriptor to write inline
	waiters int32
	room    chan struct{}
	// raw is nc's file descriptor (plain TCP only) for writing inline,
	// without starting a writer (see kickLocked).
	raw syscall.RawConn
	// wrote is when output last went to the socket (since epoch).
	wrote time.Duration

	// Owned by the writer goroutine.
	writeFn       func()    // c.writeLoop, bound once: "go c.writeLoop()" would allocate a closure each time
	writeDeadline time.Time // the deadline last set on nc

	// Event loop (see loop_linux.go); lc is set for a connection it serves.
	// Guarded by outMu: dirty (in the loop's list to flush), wantOut (the
	// loop watches the socket for room). Owned by whoever handles the
	// connection's packets (the loop, or one goroutine while it is out of
	// the loop): the rest. kaSet is, until CONNECT, when it was accepted.
	lc       *loopConn
	lrun     *loopRun
	in       []byte        // the unhandled start of a packet
	need     int           // bytes the next packet needs in all
	lastRead time.Duration // since epoch
	onLoop   bool          // its packets are being handled on the loop
	dirty    bool
	wantOut  bool
}

// serve runs the reader until the connection ends, then cleans up.
func (c *conn) serve() {
	c.run(false, 0, nil)
}

// serveAccepted serves a connection accepted by one of the server's own
// listeners; it returns at once when the reader hands the connection to a
// fresh goroutine. Only plain TCP connections do: a TLS or WebSocket
// connection's state after a read timeout is its library's affair, and
// ServeConn's caller expects it to return when the connection ends.
func (c *conn) serveAccepted() {
	_, c.handoff = c.nc.(*net.TCPConn)
	c.serve()
}

// resume continues reading an idle connection on a fresh goroutine. The
// goroutine that handled CONNECT and later packets has grown its stack to
// 4 KiB or more, and the runtime halves a stack only while less than a
// quarter of it is in use, which a goroutine blocked in Read never is below
// 4 KiB; a new goroutine blocked in this small frame stays at the 2 KiB
// minimum. Only once data arrives does the deeper work begin.
func (c *conn) resume() {
	m, err := c.nc.Read(c.small[:])
	c.run(true, m, err)
}

func (c *conn) run(resumed bool, m int, err error) {
	if c.readLoop(resumed, m, err) {
		return // a fresh goroutine goes on reading
	}
	c.finish()
	c.s.wg.Done()
}

// readLoop reads and handles packets until the connection ends. A resumed
// loop starts with the result of resume's read. It returns true when it has
// handed the connection to a fresh goroutine: a plain TCP reader that has
// handled packets and then waited idleHandoff for more does so with
// nothing buffered, moving the read deadline back to the keepalive's.
func (c *conn) readLoop(resumed bool, m int, rerr error) bool {
	buf := c.small[:]
	n := 0
	connectBy := time.Now().Add(c.s.cfg.ConnectTimeout)
	// set is the read deadline on nc (zero: none); idleAt, when not zero,
	// the hand-off deadline of this goroutine.
	var set, idleAt time.Time
	if resumed {
		set = c.keepAliveDeadline()
	}
	for {
		if !resumed {
			hard := connectBy
			if c.connected {
				// 1.5 x keepalive after the last packet, moved only once a
				// quarter of the keepalive has passed: the client always
				// has at least 1.25 x keepalive, and a busy connection does
				// not reset a timer on every read. Keepalive 0: the client
				// may stay silent for ever.
				if c.keepAlive > 0 {
					if now := time.Since(epoch); now-c.kaSet > c.keepAlive/4 {
						c.kaSet = now
					}
				}
				hard = c.keepAliveDeadline()
				if c.handoff && idleAt.IsZero() {
					idleAt = time.Now().Add(idleHandoff)
				}
			}
			want := hard
			if !idleAt.IsZero() && (hard.IsZero() || idleAt.Before(hard)) {
				want = idleAt
			}
			if !want.Equal(set) {
				set = want
				c.nc.SetReadDeadline(want)
			}
			m, rerr = c.nc.Read(buf[n:])
			if m == 0 && rerr != nil && !idleAt.IsZero() && set.Equal(idleAt) && isTimeout(rerr) {
				// The hand-off deadline, not the keepalive's.
				if n == 0 {
					set = c.keepAliveDeadline()
					c.nc.SetReadDeadline(set)
					c.releaseBig()
					c.releaseDecoder()
					readerHandoffs.Add(1)
					go c.resume()
					return true
				}
				// A packet is partly read: wait for the rest here.
				idleAt = time.Now().Add(idleHandoff)
				continue
			}
		}
		resumed = false
		filled := m > 0 && n+m == len(buf)
		n += m
		if m > 0 {
			c.s.stats.bytesRecv.Add(uint64(m))
		}
		off, ok, _ := c.consume(buf[:n])
		if !ok {
			return false
		}
		need := c.need
		if off > 0 {
			n = copy(buf, buf[off:n])
		}
		if rerr != nil {
			c.readError(rerr)
			return false
		}
		switch {
		case need > len(buf) || (filled && len(buf) < bigReadSize):
			// Traffic is flowing or a packet is larger than the buffer.
			var nb []byte
			var np *[]byte
			if need <= bigReadSize {
				np = bigReadBufs.Get().(*[]byte)
				nb = *np
			} else {
				nb = make([]byte, need)
			}
			copy(nb, buf[:n])
			c.releaseBig()
			c.bigP, buf = np, nb
		case n == 0 && len(buf) > smallReadSize:
			c.releaseBig()
			buf = c.small[:]
		}
		if n == 0 && c.dec != nil {
			c.releaseDecoder()
		}
	}
}

// consume decodes and handles the complete packets at the start of data
// and returns how many bytes they took; c.need is then what the next packet
// needs in all (0: unknown). ok false: the connection ends. connect: on the
// event loop, the next packet is CONNECT, which is not handled there (see
// serveDetached).
func (c *conn) consume(data []byte) (off int, ok, connect bool) {
	n := len(data)
	c.need = 0
	for off < n {
		if c.dec == nil {
			c.dec = decoders.Get().(*packet.Decoder)
			c.dec.Version = c.decVersion
			c.dec.MaxPacketSize = int(c.s.cfg.MaxPacketSize)
		}
		h, hl, err := packet.DecodeFixedHeader(data[off:n])
		if err != nil {
			c.protocolError(err)
			return off, false, false
		}
		if hl == 0 {
			c.need = n - off + 1
			break
		}
		if err := c.dec.CheckSize(h, hl); err != nil {
			c.protocolError(err)
			return off, false, false
		}
		total := hl + h.Remaining
		if n-off < total {
			c.need = total
			break
		}
		if c.onLoop && !c.connected {
			return off, true, true
		}
		p, err := c.dec.Decode(h, data[off+hl:off+total])
		off += total
		if err != nil {
			c.protocolError(err)
			return off, false, false
		}
		c.s.stats.msgsRecv.Add(1)
		if !c.handle(p) {
			return off, false, false
		}
	}
	return off, true, false
}

func (c *conn) releaseBig() {
	if c.bigP != nil {
		bigReadBufs.Put(c.bigP)
		c.bigP = nil
	}
}

func (c *conn) releaseDecoder() {
	if c.dec != nil {
		c.decVersion = c.dec.Version
		decoders.Put(c.dec)
		c.dec = nil
	}
}

// keepAliveDeadline is the read deadline the keepalive sets on a connected
// client: 1.5 x keepalive after kaSet, or none for keepalive 0.
func (c *conn) keepAliveDeadline() time.Time {
	if c.keepAlive <= 0 {
		return time.Time{}
	}
	return epoch.Add(c.kaSet + c.keepAlive*3/2)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// readError logs why reading ended. A keepalive timeout gets v5 DISCONNECT
// 0x8D so the client knows why.
func (c *conn) readError(err error) {
	if isTimeout(err) {
		if c.connected {
			c.s.log.Info("broker: keepalive timeout", "client", c.clientID(), "remote", c.remote())
			c.disconnect(packet.KeepAliveTimeout, "keep alive timeout")
		} else {
			c.s.log.Info("broker: no CONNECT in time", "remote", c.remote(), "listener", c.l.name)
		}
		return
	}
	if !c.connected {
		// A failed TLS handshake (no client certificate, an untrusted one)
		// or a client that went away before CONNECT.
		c.s.log.Info("broker: connection ended before CONNECT", "remote", c.remote(), "listener", c.l.name, "err", err)
		return
	}
	c.s.log.Debug("broker: connection lost", "client", c.clientID(), "remote", c.remote(), "err", err)
}

func (c *conn) remote() string {
	if a := c.nc.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

func (c *conn) clientID() string {
	if c.ci != nil {
		return c.ci.ClientID
	}
	return ""
}

// protocolError answers a packet that could not be decoded or broke a rule:
// before CONNACK with a refusing CONNACK where the protocol has one, after it
// with a v5 DISCONNECT carrying the reason; 3.1/3.1.1 connections are just
// closed. Only this connection is affected.
func (c *conn) protocolError(err error) {
	reason := packet.ProtocolError
	rule := err.Error()
	var pe *packet.Error
	if errors.As(err, &pe) {
		reason, rule = pe.Reason, pe.Rule
	}
	c.s.stats.protocolErrors.Add(1)
	c.s.log.Info("broker: protocol error", "client", c.clientID(), "remote", c.remote(), "reason", reason, "err", rule)
	if !c.connected {
		v := packet.Version(0)
		if c.dec != nil {
			v = c.dec.Version
		}
		switch {
		case reason == packet.UnsupportedProtocolVersion && v != packet.V5:
			c.refuse(packet.V311, packet.V3RefusedProtocolVersion, "")
		case v == packet.V5:
			c.refuse(v, reason, rule)
		case reason == packet.ClientIdentifierNotValid:
			c.refuse(v, packet.V3RefusedIdentifierRejected, "")
		default:
			c.closeNow()
		}
		return
	}
	c.disconnect(reason, rule)
}

// refuse sends a refusing CONNACK and closes the connection once it is out.
func (c *conn) refuse(v packet.Version, reason packet.ReasonCode, why string) {
	ack := packet.Connack{Reason: reason}
	if v == packet.V5 && why != "" && c.problemInfo {
		ack.Props.ReasonString = []byte(why)
	}
	c.outMu.Lock()
	if c.closed {
		c.outMu.Unlock()
		return
	}
	c.appendLocked(&ack, v)
	c.closed, c.flushClose = true, true
	c.kickLocked()
	w := c.writing
	c.outMu.Unlock()
	if !w {
		c.nc.Close()
	}
}

// disconnect ends the connection from the broker's side: v5 clients get a
// DISCONNECT with reason (and the explanation unless they asked for no
// problem information) ahead of the close.
func (c *conn) disconnect(reason packet.ReasonCode, why string) {
	c.outMu.Lock()
	if c.closed {
		c.outMu.Unlock()
		return
	}
	if c.version == packet.V5 {
		d := packet.Disconnect{Reason: reason}
		if why != "" && c.problemInfo {
			d.Props.ReasonString = []byte(why)
		}
		c.appendLocked(&d, c.version)
	}
	c.closed, c.flushClose = true, true
	c.kickLocked()
	w := c.writing
	c.outMu.Unlock()
	if !w {
		c.nc.Close()
	}
}

// closeNow closes the connection without flushing its output.
func (c *conn) closeNow() {
	c.outMu.Lock()
	c.dropOutputLocked()
	c.outMu.Unlock()
	c.nc.Close()
}

// dropOutputLocked gives up c's pending output: the connection is closed and
// nothing more is written; publishers waiting for room are woken. The caller
// holds c.outMu.
func (c *conn) dropOutputLocked() {
	c.closed = true
	if c.outP != nil {
		putOut(c.outP)
		c.outP = nil
	}
	if c.waiters > 0 {
		c.wakeLocked()
	}
}

// finish runs when the reader is done: it makes sure the socket closes (after
// any final packet is flushed), gives pooled buffers back, and hands the
// session and will to the server.
func (c *conn) finish() {
	c.outMu.Lock()
	if !c.closed {
		c.closed, c.flushClose = true, true
	}
	c.outMu.Unlock()
	c.releaseBig()
	c.releaseDecoder()
	if c.l.network {
		c.s.open.Add(-1)
		c.l.open.Add(-1)
	}
	// The session is detached (and the client no longer counted) before
	// the socket closes: a client that sees the end of its connection
	// finds the broker done with it.
	c.s.connClosed(c)
	c.outMu.Lock()
	w := c.writing
	c.outMu.Unlock()
	if !w {
		c.nc.Close()
	}
}

// appendLocked encodes p into the output buffer. The caller holds outMu and
// calls kickLocked afterwards.
func (c *conn) appendLocked(p packet.Packet, v packet.Version) bool {
	if c.outP == nil {
		c.outP = outBufs.Get().(*[]byte)
	}
	out, err := packet.Append(*c.outP, p, v)
	if err != nil {
		c.s.log.Warn("broker: encoding failed", "client", c.clientID(), "packet", p.Type(), "err", err)
		return false
	}
	*c.outP = out
	c.s.stats.msgsSent.Add(1)
	return true
}

// send queues one control packet; it is never dropped while the connection
// is open (acknowledgements are small and bounded by the in-flight windows).
func (c *conn) send(p packet.Packet) {
	c.outMu.Lock()
	if !c.closed {
		c.appendLocked(p, c.version)
		c.kickLocked()
	}
	c.outMu.Unlock()
}

// sendAck queues PUBACK, PUBREC, PUBREL or PUBCOMP without allocating.
func (c *conn) sendAck(kind packet.Type, id uint16, reason packet.ReasonCode, why string) {
	a := packet.Ack{Kind: kind, PacketID: id, Reason: reason}
	c.outMu.Lock()
	if c.version != packet.V5 {
		// 3.1/3.1.1 acknowledgements carry no reason: a refusal is a
		// plain acknowledgement there [MQTT-3.3.5-2].
		a.Reason = packet.Success
	}
	if !c.closed {
		if why != "" && c.problemInfo && c.version == packet.V5 {
			a.Props.ReasonString = []byte(why)
		}
		if c.outP == nil {
			c.outP = outBufs.Get().(*[]byte)
		}
		if out, err := a.Append(*c.outP, c.version); err == nil {
			*c.outP = out
			c.s.stats.msgsSent.Add(1)
		}
		c.kickLocked()
	}
	c.outMu.Unlock()
}

// sendResult says what became of an outgoing PUBLISH.
type sendResult byte

const (
	sent     sendResult = iota
	full                // QoS 0 dropped: output buffer full (slow consumer)
	tooLarge            // larger than the client's Maximum Packet Size
	offline             // connection closed
	noRoom              // waitIfFull: not sent, the caller may wait for room
)

// sendMode says what sendPublish does with a PUBLISH that does not fit
// within MaxOutputBytes.
type sendMode byte

const (
	keepAll    sendMode = iota // QoS 1/2: the output may grow (bounded by the in-flight window)
	dropIfFull                 // QoS 0: dropped
	waitIfFull                 // QoS 0: noRoom, unless the client is stalled (then dropped)
)

// sendPublish encodes p for this client. It assigns an outbound topic alias
// when the client allows them. p.Topic is restored before it returns;
// p.Props.TopicAlias is overwritten.
func (c *conn) sendPublish(p *packet.Publish, mode sendMode) sendResult {
	return c.sendPublishInline(p, mode, false)
}

// sendPublishInline is sendPublish that, when inline is set, may write p
// from the calling goroutine (see kickInlineLocked).
func (c *conn) sendPublishInline(p *packet.Publish, mode sendMode, inline bool) sendResult {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.closed {
		return offline
	}
	p.Props.Clear(packet.PropTopicAlias)
	p.Props.TopicAlias = 0
	size := p.Size(c.version)
	if c.maxOut > 0 && size > c.maxOut {
		return tooLarge
	}
	if mode != keepAll && !c.roomLocked(size) {
		if mode == waitIfFull && !c.stalled {
			return noRoom
		}
		return full
	}
	topic := p.Topic
	if c.aliasMax > 0 {
		if a, ok := c.aliases[string(topic)]; ok {
			p.Props.TopicAlias = a
			p.Props.Set(packet.PropTopicAlias)
			p.Topic = nil
		} else if c.nextAlias < c.aliasMax {
			if c.aliases == nil {
				c.aliases = make(map[string]uint16)
			}
			c.nextAlias++
			c.aliases[string(topic)] = c.nextAlias
			p.Props.TopicAlias = c.nextAlias
			p.Props.Set(packet.PropTopicAlias)
		}
	}
	if c.outP == nil {
		c.outP = outBufs.Get().(*[]byte)
	}
	out, err := p.Append(*c.outP, c.version)
	p.Topic = topic
	if err != nil {
		c.s.log.Warn("broker: encoding PUBLISH failed", "client", c.clientID(), "err", err)
		return tooLarge
	}
	*c.outP = out
	c.s.stats.msgsSent.Add(1)
	c.s.stats.pubSent[p.QoS&3].Add(1)
	c.s.stats.pubBytesSent[p.QoS&3].Add(uint64(len(p.Payload)))
	if inline {
		c.kickInlineLocked()
	} else {
		c.kickLocked()
	}
	if c.waiters > 0 && c.roomLocked(1) {
		// Pass the writer's token on to the next waiting publisher.
		c.wakeLocked()
	}
	return sent
}

// roomLocked reports whether size more bytes fit the output buffer. An empty
// buffer always takes one packet, however large.
func (c *conn) roomLocked(size int) bool {
	if c.outP == nil || len(*c.outP) == 0 {
		return true
	}
	return len(*c.outP)+size <= c.s.cfg.MaxOutputBytes
}

// wakeLocked gives one waiting publisher a chance to retry.
func (c *conn) wakeLocked() {
	select {
	case c.room <- struct{}{}:
	default:
	}
}

// awaitRoom waits, holding no lock, until p fits the output buffer, the
// connection closes or tm fires; tm is set to d again whenever the writer
// makes progress. It reports false when tm fired with still no room: the client is then marked stalled, so that its QoS 0 messages are
// dropped without waiting until its writer has completed a write and taken
// the buffer.
func (c *conn) awaitRoom(p *packet.Publish, tm *time.Timer, d time.Duration) bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	for {
		if c.closed {
			if c.waiters > 0 {
				c.wakeLocked() // let the next waiter see it too
			}
			return true
		}
		if c.roomLocked(p.Size(c.version)) {
			return true
		}
		if c.room == nil {
			c.room = make(chan struct{}, 1)
		}
		c.waiters++
		c.outMu.Unlock()
		timedOut := false
		select {
		case <-c.room:
			tm.Reset(d)
		case <-tm.C:
			timedOut = true
		}
		c.outMu.Lock()
		c.waiters--
		if timedOut {
			if c.closed || c.roomLocked(p.Size(c.version)) {
				return true
			}
			if !c.stalled {
				c.stalled = true
				c.s.stats.slowStalls.Add(1)
			}
			return false
		}
	}
}

// kickLocked starts the writer when output is pending and none runs. The
// writer exits when the output drains, so an idle client has no writer.
func (c *conn) kickLocked() {
	if c.lc != nil {
		c.s.loop.kickLocked(c)
		return
	}
	if c.writing || c.outP == nil || len(*c.outP) == 0 {
		return
	}
	c.wrote = time.Since(epoch)
	c.writing = true
	c.s.wg.Add(1)
	if c.writeFn == nil {
		c.writeFn = c.writeLoop
	}
	go c.writeFn()
}

// inlineGap: output that comes at least this long after the previous write
// may be written inline (see kickInlineLocked).
const inlineGap = 50 * time.Microsecond

// kickInlineLocked is kickLocked for a routing goroutine that may write
// inline: on a plain TCP connection that has not written for inlineGap, the
// pending output is first offered to the socket with one non-blocking write
// from the calling goroutine. When the socket takes all of it, as it does
// whenever the client keeps up, no writer goroutine is started and woken for
// it. What the socket does not take is left to the writer, so the caller
// never waits for the client; output that follows closer than inlineGap is
// left to the writer, which batches it into fewer, larger writes. A routed
// message writes inline to one subscriber at most (see route.inline), so
// that a publisher with many subscribers never does their writes itself.
func (c *conn) kickInlineLocked() {
	if c.lc != nil {
		c.s.loop.kickLocked(c)
		return
	}
	if c.writing || c.outP == nil || len(*c.outP) == 0 {
		return
	}
	if now := time.Since(epoch); now-c.wrote >= inlineGap && c.writeInlineLocked() {
		c.wrote = now
		return
	}
	c.kickLocked()
}

// inlineWriter carries one non-blocking write through RawConn.Write; its fn
// is bound once, so a write allocates nothing.
type inlineWriter struct {
	fn  func(fd uintptr) bool
	buf []byte
	n   int
	err error
}

var inlineWriters = sync.Pool{New: func() any {
	w := &inlineWriter{}
	w.fn = w.write
	return w
}}

func (w *inlineWriter) write(fd uintptr) bool {
	w.n, w.err = rawWrite(int(fd), w.buf)
	return true // never wait for the socket
}

// writeInlineLocked writes the pending output with one non-blocking write
// and reports whether all of it went; what is left stays pending, in order.
// The caller holds outMu, so nothing is appended meanwhile.
func (c *conn) writeInlineLocked() bool {
	if c.raw == nil {
		if c.noRaw {
			return false
		}
		tc, ok := c.nc.(*net.TCPConn)
		if !ok {
			c.noRaw = true
			return false
		}
		raw, err := tc.SyscallConn()
		if err != nil {
			c.noRaw = true
			return false
		}
		c.raw = raw
	}
	p := *c.outP
	w := inlineWriters.Get().(*inlineWriter)
	w.buf, w.n, w.err = p, 0, nil
	err := c.raw.Write(w.fn)
	n, werr := w.n, w.err
	w.buf = nil
	inlineWriters.Put(w)
	if err != nil || werr != nil || n <= 0 {
		// EAGAIN (the socket is full) or a failure: the writer takes
		// over and meets the same condition with its deadline.
		return false
	}
	c.s.stats.bytesSent.Add(uint64(n))
	if n < len(p) {
		*c.outP = p[:copy(p, p[n:])]
		return false
	}
	putOut(c.outP)
	c.outP = nil
	// The client is reading: as when the writer drains the buffer.
	c.stalled = false
	if c.waiters > 0 {
		c.wakeLocked()
	}
	return true
}

// writeLoop writes everything pending in one Write per round (batching what
// accumulated while the previous write was in progress) until nothing is left.
func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	yielded := false
	for {
		c.outMu.Lock()
		p := c.outP
		if (p == nil || len(*p) == 0) && !yielded && !c.flushClose {
			// Under load more output is usually a moment away: one yield
			// lets publishers add to it, sparing a goroutine exit and start.
			c.outMu.Unlock()
			yielded = true
			runtime.Gosched()
			continue
		}
		yielded = false
		if p == nil || len(*p) == 0 {
			c.writing = false
			fc := c.flushClose
			c.outMu.Unlock()
			if fc {
				c.nc.Close()
			}
			return
		}
		c.outP = nil
		// The previous write completed and the buffer is drained: the
		// client is reading again.
		c.stalled = false
		if c.waiters > 0 {
			c.wakeLocked()
		}
		c.outMu.Unlock()

		// Moving the deadline only when half of it is used up keeps a
		// syscall-free (and, for some conns, allocation-free) write path.
		if now := time.Now(); c.writeDeadline.Sub(now) < c.s.cfg.WriteTimeout/2 {
			c.writeDeadline = now.Add(c.s.cfg.WriteTimeout)
			c.nc.SetWriteDeadline(c.writeDeadline)
		}
		n, err := c.write(*p)
		c.s.stats.bytesSent.Add(uint64(n))
		putOut(p)
		if err != nil {
			c.outMu.Lock()
			c.writing = false
			c.dropOutputLocked()
			c.outMu.Unlock()
			c.nc.Close()
			return
		}
	}
}

// writeChunk is the most the writer hands to one Write while publishers
// wait: each completed chunk tells them the client is making progress.
const writeChunk = 64 << 10

// write writes b, in chunks of writeChunk, waking a waiting publisher after
// each but the last.
func (c *conn) write(b []byte) (int, error) {
	total := 0
	for len(b) > writeChunk {
		n, err := c.nc.Write(b[:writeChunk])
		total += n
		if err != nil {
			return total, err
		}
		b = b[writeChunk:]
		c.outMu.Lock()
		if c.waiters > 0 {
			c.wakeLocked()
		}
		c.outMu.Unlock()
	}
	n, err := c.nc.Write(b)
	return total + n, err
}

func putOut(p *[]byte) {
	if cap(*p) > maxPooledOut {
		return
	}
	*p = (*p)[:0]
	outBufs.Put(p)
}
