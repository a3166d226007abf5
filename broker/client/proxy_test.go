package client

import (
	"net"
	"sync"
	"testing"

	"gatewayd/broker/packet"
)

// proxy is a TCP relay between a client and a broker that understands packet
// boundaries: it records what the client sends and can drop what the server
// sends, to stage lost acknowledgements and dead connections.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu      sync.Mutex
	drop    func(packet.Type) bool // server→client packets to drop
	sent    []rawPacket            // client→server, in order
	conns   []net.Conn
	dropped chan packet.Type
	wg      sync.WaitGroup
}

type rawPacket struct {
	h    packet.FixedHeader
	body []byte
}

// id returns the packet identifier of a PUBLISH (QoS > 0) or an ack.
func (p rawPacket) id() uint16 {
	b := p.body
	if p.h.Type == packet.PUBLISH {
		n := int(b[0])<<8 | int(b[1])
		b = b[2+n:]
	}
	return uint16(b[0])<<8 | uint16(b[1])
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target, dropped: make(chan packet.Type, 100)}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) URL() string { return "mqtt://" + p.ln.Addr().String() }

func (p *proxy) setDrop(f func(packet.Type) bool) {
	p.mu.Lock()
	p.drop = f
	p.mu.Unlock()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		sc, err := net.Dial("tcp", p.target)
		if err != nil {
			cc.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, cc, sc)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.relay(cc, sc, true)
		go p.relay(sc, cc, false)
	}
}

func (p *proxy) relay(from, to net.Conn, fromClient bool) {
	defer p.wg.Done()
	defer from.Close()
	defer to.Close()
	rd := packetReader{r: from, buf: make([]byte, 4096)}
	var dec packet.Decoder
	for {
		h, body, err := rd.next(&dec)
		if err != nil {
			return
		}
		raw := packet.AppendVarInt([]byte{byte(h.Type)<<4 | h.Flags}, h.Remaining)
		raw = append(raw, body...)
		p.mu.Lock()
		drop := !fromClient && p.drop != nil && p.drop(h.Type)
		if fromClient {
			p.sent = append(p.sent, rawPacket{h, append([]byte(nil), body...)})
		}
		p.mu.Unlock()
		if drop {
			select {
			case p.dropped <- h.Type:
			default:
			}
			continue
		}
		if _, err := to.Write(raw); err != nil {
			return
		}
	}
}

// killConns cuts every relayed connection, as a network failure would.
func (p *proxy) killConns() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// sentPackets returns what the client sent, of type t.
func (p *proxy) sentPackets(t packet.Type) []rawPacket {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []rawPacket
	for _, r := range p.sent {
		if r.h.Type == t {
			out = append(out, r)
		}
	}
	return out
}

func (p *proxy) close() {
	p.ln.Close()
	p.killConns()
	p.wg.Wait()
}
