// Package testproxy relays TCP between MQTT clients and a broker for a test,
// to stage what a network does to a link: it cuts links and refuses new ones,
// black-holes them (the connections stay open, nothing passes), delays every
// packet as a slow uplink does, holds back everything going one way until
// released (acknowledgements that have not come back yet), drops chosen
// packets on their way from the broker (lost acknowledgements, unanswered
// pings), and closes a connection at a client's SUBSCRIBE (a link failing
// between CONNACK and SUBSCRIBE).
//
// It follows MQTT packet boundaries: it records the packets clients send,
// reports every packet it carries to a watcher, and fails the test on a
// malformed one.
//
// Only tests import it.
package testproxy

import (
	"net"
	"sync"
	"testing"
	"time"

	"gatewayd/broker/packet"
)

// Packet is one MQTT packet a client sent.
type Packet struct {
	Header packet.FixedHeader
	Body   []byte // variable header and payload
}

// ID returns the packet identifier of a PUBLISH at QoS 1 or 2 or of an
// acknowledgement.
func (p Packet) ID() uint16 {
	b := p.Body
	if p.Header.Type == packet.PUBLISH {
		n := int(b[0])<<8 | int(b[1])
		b = b[2+n:]
	}
	return uint16(b[0])<<8 | uint16(b[1])
}

// Direction is the way a packet goes through the proxy.
type Direction int

const (
	ToBroker Direction = iota // from a client to the broker
	ToClient                  // from the broker to a client
)

// Event is what Watch reports: a packet the proxy carries, when it passes it
// on, or the end of a connection.
type Event struct {
	Conn   int // the connection, numbered from 0 in the order accepted
	Dir    Direction
	Header packet.FixedHeader
	Body   []byte // variable header and payload; valid during the call
	Closed bool   // the connection has ended: no Header, no Body
}

// Proxy relays connections made to its address to the target address.
type Proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu       sync.Mutex
	links    []*link // every relayed connection, in the order accepted
	delay    time.Duration
	down     bool // close new connections at once
	blackout bool // carry nothing, close nothing
	hold     [2]bool
	// dropSubscribes: the next that many SUBSCRIBE packets from a client
	// are not carried; their connection is closed instead.
	dropSubscribes int
	drop           func(packet.Type) bool // packets from the broker not carried
	dropped        chan packet.Type
	sent           []Packet // from clients, in order
	watch          func(Event)
	wg             sync.WaitGroup
}

// link is one relayed connection.
type link struct {
	n      int
	conns  [2]net.Conn // [ToBroker] writes to the broker, [ToClient] to the client
	out    [2]*queue   // to the writer of each direction
	held   [2][]byte
	closed bool
}

type chunk struct {
	due time.Time
	b   []byte
}

// queue is what a writer has yet to pass on. It never blocks the relay: a
// peer that reads nothing must not stall the proxy.
type queue struct {
	mu     sync.Mutex
	chunks []chunk
	closed bool
	more   chan struct{}
}

func newQueue() *queue { return &queue{more: make(chan struct{}, 1)} }

func (q *queue) push(c chunk) {
	q.mu.Lock()
	q.chunks = append(q.chunks, c)
	q.mu.Unlock()
	q.signal()
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

func (q *queue) signal() {
	select {
	case q.more <- struct{}{}:
	default:
	}
}

// next returns the next chunk, waiting for one; false once the queue is
// closed and empty.
func (q *queue) next() (chunk, bool) {
	for {
		q.mu.Lock()
		if len(q.chunks) > 0 {
			c := q.chunks[0]
			q.chunks = q.chunks[1:]
			q.mu.Unlock()
			return c, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return chunk{}, false
		}
		<-q.more
	}
}

// New starts a proxy on a loopback port that relays to target
// ("host:port"); it is closed, with every connection, when the test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, ln: ln, target: target, dropped: make(chan packet.Type, 100)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's address, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is the proxy's address as an MQTT URL, mqtt://127.0.0.1:port.
func (p *Proxy) URL() string { return "mqtt://" + p.Addr() }

func (p *Proxy) accept() {
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
		l := &link{conns: [2]net.Conn{sc, cc}}
		l.out = [2]*queue{newQueue(), newQueue()}
		p.mu.Lock()
		l.n = len(p.links)
		p.links = append(p.links, l)
		p.mu.Unlock()
		p.wg.Add(4)
		for _, d := range []Direction{ToBroker, ToClient} {
			go p.write(l, d)
			go p.relay(l, d)
		}
	}
}

// write passes what the relay of direction d carries on once it is due, in
// order.
func (p *Proxy) write(l *link, d Direction) {
	defer p.wg.Done()
	to := l.conns[d]
	defer to.Close()
	for {
		c, ok := l.out[d].next()
		if !ok {
			return
		}
		time.Sleep(time.Until(c.due))
		if _, err := to.Write(c.b); err != nil {
			return
		}
	}
}

// relay reads whole packets going one way and carries, holds, drops or
// swallows them.
func (p *Proxy) relay(l *link, d Direction) {
	defer p.wg.Done()
	from := l.conns[1-d]
	defer l.out[d].close()
	defer from.Close()
	defer p.endLink(l)
	var buf []byte
	rd := make([]byte, 32<<10)
	for {
		n, err := from.Read(rd)
		buf = append(buf, rd[:n]...)
		now := time.Now()
		p.mu.Lock()
		var out []byte
		for {
			h, hn, herr := packet.DecodeFixedHeader(buf)
			if herr != nil {
				p.mu.Unlock()
				p.t.Errorf("testproxy: %v", herr)
				return
			}
			if hn == 0 || len(buf) < hn+h.Remaining {
				break
			}
			pk := buf[:hn+h.Remaining]
			buf = buf[len(pk):]
			if d == ToBroker {
				p.sent = append(p.sent, Packet{h, append([]byte(nil), pk[hn:]...)})
				if h.Type == packet.SUBSCRIBE && p.dropSubscribes > 0 {
					p.dropSubscribes--
					p.sendLocked(l, d, now, out)
					p.mu.Unlock()
					return
				}
			}
			switch {
			case l.closed || p.blackout:
			case d == ToClient && p.drop != nil && p.drop(h.Type):
				select {
				case p.dropped <- h.Type:
				default:
				}
			case p.hold[d]:
				l.held[d] = append(l.held[d], pk...)
			default:
				out = append(out, pk...)
			}
		}
		p.sendLocked(l, d, now, out)
		p.mu.Unlock()
		buf = append(buf[:0:0], buf...)
		if err != nil {
			return
		}
	}
}

// sendLocked hands whole packets read at read to the writer of direction d,
// and reports them to the watcher.
func (p *Proxy) sendLocked(l *link, d Direction, read time.Time, pks []byte) {
	if len(pks) == 0 || l.closed {
		return
	}
	if p.watch != nil {
		for rest := pks; len(rest) > 0; {
			h, hn, _ := packet.DecodeFixedHeader(rest)
			p.watch(Event{Conn: l.n, Dir: d, Header: h, Body: rest[hn : hn+h.Remaining]})
			rest = rest[hn+h.Remaining:]
		}
	}
	l.out[d].push(chunk{read.Add(p.delay), pks})
}

// endLink notes that a connection has ended: what it held is lost, nothing
// more is carried on it (what was already handed to its writers still is).
func (p *Proxy) endLink(l *link) {
	p.mu.Lock()
	p.endLinkLocked(l)
	p.mu.Unlock()
}

func (p *Proxy) endLinkLocked(l *link) {
	if l.closed {
		return
	}
	l.closed = true
	l.held = [2][]byte{}
	if p.watch != nil {
		p.watch(Event{Conn: l.n, Closed: true})
	}
}

// Watch makes the proxy call f for every packet it carries, as it passes it
// on (a held packet when it is let go), and when a connection ends. f runs
// with the proxy locked: it must not call the proxy.
func (p *Proxy) Watch(f func(Event)) {
	p.mu.Lock()
	p.watch = f
	p.mu.Unlock()
}

// Hold holds back (on) everything going one way, on every connection, or
// (off) passes on what it held, in order, and carries again.
func (p *Proxy) Hold(d Direction, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold[d] = on
	if !on {
		p.releaseLocked(d)
	}
}

func (p *Proxy) releaseLocked(d Direction) {
	now := time.Now()
	for _, l := range p.links {
		if len(l.held[d]) > 0 {
			p.sendLocked(l, d, now, l.held[d])
			l.held[d] = nil
		}
	}
}

// SetDelay makes the proxy carry every packet d after it arrived, each way,
// as a link with a round trip of 2d would (latency only: bandwidth is the
// loopback's).
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Cut closes every relayed connection, both sides, as a network failure
// would (what was held is lost); with refuse, new connections are closed at
// once until Restore.
func (p *Proxy) Cut(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = refuse
	p.closeAllLocked()
}

func (p *Proxy) closeAllLocked() {
	for _, l := range p.links {
		p.endLinkLocked(l)
		l.conns[ToBroker].Close()
		l.conns[ToClient].Close()
	}
}

// BlackHole swallows every byte in both directions, on new and existing
// connections, without closing anything.
func (p *Proxy) BlackHole() {
	p.mu.Lock()
	p.blackout = true
	p.mu.Unlock()
}

// Restore accepts and carries again, holding nothing back; black-holed
// connections are closed (their peers have given up on them).
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	wasHole := p.blackout
	p.down, p.blackout = false, false
	if wasHole {
		p.closeAllLocked()
	}
	for _, d := range []Direction{ToBroker, ToClient} {
		p.hold[d] = false
		p.releaseLocked(d)
	}
}

// DropSubscribes makes the proxy close, instead of carrying, the next n
// SUBSCRIBE packets that clients send: what came before each is carried.
func (p *Proxy) DropSubscribes(n int) {
	p.mu.Lock()
	p.dropSubscribes = n
	p.mu.Unlock()
}

// SetDrop makes the proxy drop the packets from the broker whose type drop
// returns true for (nil: carry all); each is reported on Dropped.
func (p *Proxy) SetDrop(drop func(packet.Type) bool) {
	p.mu.Lock()
	p.drop = drop
	p.mu.Unlock()
}

// Dropped receives the type of each packet SetDrop dropped (the first 100
// not received yet).
func (p *Proxy) Dropped() <-chan packet.Type { return p.dropped }

// Sent returns the packets of type t that clients sent, in order.
func (p *Proxy) Sent(t packet.Type) []Packet {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Packet
	for _, r := range p.sent {
		if r.Header.Type == t {
			out = append(out, r)
		}
	}
	return out
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Cut(true)
	p.wg.Wait()
}
