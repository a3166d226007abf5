// Package testproxy relays TCP between MQTT clients and a broker for a test,
// to stage what a network does to a link: it cuts links and refuses new ones,
// black-holes them (the connections stay open, no byte passes), delays every
// packet as a slow uplink does, drops chosen packets on their way from the
// broker (lost acknowledgements, unanswered pings), and closes a connection
// at a client's SUBSCRIBE (a link failing between CONNACK and SUBSCRIBE). It
// follows MQTT packet boundaries and records the packets clients send.
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

// Proxy relays connections made to its address to the target address.
type Proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu       sync.Mutex
	conns    []net.Conn // both sides of every relayed connection
	delay    time.Duration
	down     bool // close new connections at once
	blackout bool // carry nothing, close nothing
	// dropSubscribes: the next that many SUBSCRIBE packets from a client
	// are not carried; their connection is closed instead.
	dropSubscribes int
	drop           func(packet.Type) bool // packets from the broker not carried
	dropped        chan packet.Type
	sent           []Packet // from clients, in order
	wg             sync.WaitGroup
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
		p.mu.Lock()
		p.conns = append(p.conns, cc, sc)
		p.mu.Unlock()
		p.wg.Add(4)
		go p.relay(cc, sc, true)
		go p.relay(sc, cc, false)
	}
}

type chunk struct {
	due time.Time
	b   []byte
}

// relay reads whole packets from one side and hands those it carries to a
// writer that passes them on to the other side once they are due, in order.
func (p *Proxy) relay(from, to net.Conn, fromClient bool) {
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
	var buf []byte
	rd := make([]byte, 32<<10)
	for {
		n, err := from.Read(rd)
		buf = append(buf, rd[:n]...)
		now := time.Now()
		var out []byte
		for {
			h, hn, herr := packet.DecodeFixedHeader(buf)
			if herr != nil {
				p.t.Logf("testproxy: %v: closing the connection", herr)
				return
			}
			if hn == 0 || len(buf) < hn+h.Remaining {
				break
			}
			pk := buf[:hn+h.Remaining]
			buf = buf[len(pk):]
			p.mu.Lock()
			if fromClient {
				p.sent = append(p.sent, Packet{h, append([]byte(nil), pk[hn:]...)})
				if h.Type == packet.SUBSCRIBE && p.dropSubscribes > 0 {
					p.dropSubscribes--
					delay := p.delay
					p.mu.Unlock()
					if len(out) > 0 {
						ch <- chunk{now.Add(delay), out}
					}
					return
				}
			}
			carry := !p.blackout
			if carry && !fromClient && p.drop != nil && p.drop(h.Type) {
				carry = false
				select {
				case p.dropped <- h.Type:
				default:
				}
			}
			p.mu.Unlock()
			if carry {
				out = append(out, pk...)
			}
		}
		buf = append(buf[:0:0], buf...)
		if len(out) > 0 {
			p.mu.Lock()
			delay := p.delay
			p.mu.Unlock()
			ch <- chunk{now.Add(delay), out}
		}
		if err != nil {
			return
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
// would; with refuse, new connections are closed at once until Restore.
func (p *Proxy) Cut(refuse bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = refuse
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// BlackHole swallows every byte in both directions, on new and existing
// connections, without closing anything.
func (p *Proxy) BlackHole() {
	p.mu.Lock()
	p.blackout = true
	p.mu.Unlock()
}

// Restore accepts and carries again; black-holed connections are closed
// (their peers have given up on them).
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	wasHole := p.blackout
	p.down, p.blackout = false, false
	if wasHole {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
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
