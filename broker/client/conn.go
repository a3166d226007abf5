package client

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/broker/packet"
)

// conn is one network connection of a client: a reader goroutine that
// decodes and handles what the server sends, a writer goroutine that writes
// everything queued since its last write in one call, and a keepalive
// goroutine.
type conn struct {
	c    *Client
	nc   net.Conn
	v    packet.Version
	rd   packetReader
	dec  packet.Decoder
	info ServerInfo

	pingTimeout time.Duration
	aliases     [][]byte // inbound topic aliases (v5), indexed by alias

	mu      sync.Mutex
	ack     packet.Ack     // scratch for sendAck, under mu
	publish packet.Publish // scratch for sendMessage, under mu
	out     []byte         // encoded packets not yet handed to the writer
	cbs     []func(error)  // called when out has been written
	closed  bool
	err     error // why the connection ended; set before done is closed

	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup

	born      time.Time
	lastWrite atomic.Int64 // nanoseconds since born
	pingSent  atomic.Int64 // nanoseconds since born + 1; zero: no PINGREQ outstanding
	lastRead  atomic.Int64 // nanoseconds since born of the last packet read
	// handing is set while the reader waits for the handler goroutine to take
	// a message: the server may be answering PINGREQ behind it, so a slow
	// handler must not make the connection look dead.
	handing atomic.Bool
}

// handshake sends CONNECT on nc and reads CONNACK. The caller bounds it with
// a deadline.
func (c *Client) handshake(nc net.Conn) (*conn, error) {
	v := c.opts.Protocol
	buf, err := c.connectPacket().Append(nil)
	if err != nil {
		return nil, fmt.Errorf("mqtt client: encode CONNECT: %w", err)
	}
	if _, err := nc.Write(buf); err != nil {
		return nil, fmt.Errorf("mqtt client: connect %s: write CONNECT: %w", c.target(), err)
	}
	cn := &conn{
		c:    c,
		nc:   nc,
		v:    v,
		rd:   packetReader{r: nc, buf: make([]byte, 4096)},
		dec:  packet.Decoder{Version: v, MaxPacketSize: int(c.opts.ConnectProperties.MaximumPacketSize)},
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		born: time.Now(),
	}
	h, body, err := cn.rd.next(&cn.dec)
	if err != nil {
		return nil, fmt.Errorf("mqtt client: connect %s: reading CONNACK: %w", c.target(), err)
	}
	if h.Type != packet.CONNACK {
		return nil, fmt.Errorf("mqtt client: connect %s: server sent %v instead of CONNACK", c.target(), h.Type)
	}
	pk, err := cn.dec.Decode(h, body)
	if err != nil {
		return nil, fmt.Errorf("mqtt client: connect %s: CONNACK: %w", c.target(), err)
	}
	ack := pk.(*packet.Connack)
	if v == packet.V5 && ack.Reason.IsError() {
		return nil, &ReasonError{Op: "connect", Reason: ack.Reason, ReasonString: string(ack.Props.ReasonString)}
	}
	if v != packet.V5 && ack.Reason != packet.V3Accepted {
		return nil, v3ConnackError(ack.Reason)
	}
	info := ServerInfo{
		SessionPresent:  ack.SessionPresent,
		ReceiveMaximum:  65535,
		MaximumQoS:      2,
		RetainAvailable: true,
		KeepAlive:       max(c.opts.KeepAlive, 0),
	}
	if v == packet.V5 {
		pp := &ack.Props
		if pp.Has(packet.PropReceiveMaximum) && pp.ReceiveMaximum > 0 {
			info.ReceiveMaximum = pp.ReceiveMaximum
		}
		if pp.Has(packet.PropMaximumQoS) {
			info.MaximumQoS = pp.MaximumQoS
		}
		if pp.Has(packet.PropRetainAvailable) {
			info.RetainAvailable = pp.RetainAvailable == 1
		}
		if pp.Has(packet.PropMaximumPacketSize) {
			info.MaximumPacketSize = pp.MaximumPacketSize
		}
		if pp.Has(packet.PropTopicAliasMaximum) {
			info.TopicAliasMaximum = pp.TopicAliasMaximum
		}
		if pp.Has(packet.PropServerKeepAlive) {
			info.KeepAlive = time.Duration(pp.ServerKeepAlive) * time.Second
		}
		info.AssignedClientID = string(pp.AssignedClientID)
		if n := c.opts.ConnectProperties.TopicAliasMaximum; n > 0 {
			cn.aliases = make([][]byte, int(n)+1)
		}
	}
	cn.info = info
	cn.pingTimeout = c.opts.PingTimeout
	return cn, nil
}

// start runs the connection's goroutines.
func (cn *conn) start() {
	cn.wg.Add(2)
	go cn.readLoop()
	go cn.writeLoop()
	if cn.info.KeepAlive > 0 {
		cn.wg.Add(1)
		go cn.keepAlive()
	}
}

// send queues p for the writer; cb, if not nil, is called once p has been
// written or the connection has failed. Errors: ErrConnectionLost when the
// connection is closed (cb is not called), or an encoding error.
func (cn *conn) send(p packet.Packet, cb func(error)) error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.queueLocked(p, cb)
}

func (cn *conn) queueLocked(p packet.Packet, cb func(error)) error {
	if cn.closed {
		return ErrConnectionLost
	}
	n := len(cn.out)
	out, err := packet.Append(cn.out, p, cn.v)
	if err != nil {
		cn.out = out[:n]
		return fmt.Errorf("mqtt client: encode %v: %w", p.Type(), err)
	}
	if max := cn.info.MaximumPacketSize; max > 0 && len(out)-n > int(max) {
		cn.out = out[:n]
		return &ReasonError{Op: strings.ToLower(p.Type().String()), Reason: packet.PacketTooLarge,
			ReasonString: fmt.Sprintf("%v of %d bytes is larger than the server's maximum packet size %d", p.Type(), len(out)-n, max)}
	}
	cn.out = out
	if cb != nil {
		cn.cbs = append(cn.cbs, cb)
	}
	select {
	case cn.wake <- struct{}{}:
	default:
	}
	return nil
}

// sendAck queues a PUBACK, PUBREC, PUBREL or PUBCOMP without allocating.
func (cn *conn) sendAck(kind packet.Type, id uint16, reason packet.ReasonCode) error {
	cn.mu.Lock()
	cn.ack = packet.Ack{Kind: kind, PacketID: id, Reason: reason}
	err := cn.queueLocked(&cn.ack, nil)
	cn.mu.Unlock()
	return err
}

// sendMessage queues a QoS 0 PUBLISH of m without allocating a packet.
func (cn *conn) sendMessage(m *Message, cb func(error)) error {
	cn.mu.Lock()
	cn.publish = m.toPublish(cn.v)
	err := cn.queueLocked(&cn.publish, cb)
	cn.publish = packet.Publish{} // drop the references to m
	cn.mu.Unlock()
	return err
}

// close ends the connection once; err says why.
func (cn *conn) close(err error) {
	cn.mu.Lock()
	if cn.closed {
		cn.mu.Unlock()
		return
	}
	cn.closed = true
	cn.err = err
	cbs := cn.cbs
	cn.cbs, cn.out = nil, nil
	cn.mu.Unlock()
	cn.nc.Close()
	close(cn.done)
	for _, cb := range cbs {
		cb(ErrConnectionLost)
	}
}

func (cn *conn) since() int64 { return int64(time.Since(cn.born)) }

// writeLoop writes whatever was queued since its last write in one Write.
func (cn *conn) writeLoop() {
	defer cn.wg.Done()
	var spare []byte
	var spareCbs []func(error)
	for {
		select {
		case <-cn.wake:
		case <-cn.done:
			return
		}
		cn.mu.Lock()
		if cn.closed {
			cn.mu.Unlock()
			return
		}
		buf, cbs := cn.out, cn.cbs
		cn.out, cn.cbs = spare[:0], spareCbs[:0]
		cn.mu.Unlock()
		var err error
		if len(buf) > 0 {
			if _, err = cn.nc.Write(buf); err != nil {
				cn.close(fmt.Errorf("mqtt client: write: %w", err))
				err = ErrConnectionLost
			} else {
				cn.lastWrite.Store(cn.since())
			}
		}
		for _, cb := range cbs {
			cb(err)
		}
		clear(cbs)
		if err != nil {
			return
		}
		// Keep the buffer for the next batch unless a burst made it large.
		if cap(buf) <= 64<<10 {
			spare = buf[:0]
		} else {
			spare = nil
		}
		spareCbs = cbs[:0]
	}
}

// keepAlive sends PINGREQ when the client has been silent for the keepalive
// interval and declares the connection dead when PINGRESP does not follow
// within the ping timeout.
func (cn *conn) keepAlive() {
	defer cn.wg.Done()
	ka := int64(cn.info.KeepAlive)
	pt := int64(cn.pingTimeout)
	t := time.NewTimer(cn.info.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-cn.done:
			return
		}
		now := cn.since()
		if sent := cn.pingSent.Load(); sent != 0 {
			switch {
			case cn.lastRead.Load() >= sent-1:
				// Something arrived since the PINGREQ: the server is alive.
				cn.pingSent.CompareAndSwap(sent, 0)
			case cn.handing.Load():
				// Unread packets wait behind a busy handler.
				t.Reset(time.Duration(pt))
				continue
			default:
				if wait := sent - 1 + pt - now; wait > 0 {
					t.Reset(time.Duration(wait))
					continue
				}
				cn.close(ErrPingTimeout)
				return
			}
		}
		if idle := now - cn.lastWrite.Load(); idle < ka {
			t.Reset(time.Duration(ka - idle))
			continue
		}
		cn.pingSent.Store(now + 1)
		cn.send(&packet.Pingreq{}, nil)
		t.Reset(time.Duration(pt))
	}
}

// readLoop reads and handles packets until the connection fails.
func (cn *conn) readLoop() {
	defer cn.wg.Done()
	for {
		h, body, err := cn.rd.next(&cn.dec)
		if err != nil {
			select {
			case <-cn.done: // closed by us; the reason is already set
			default:
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("mqtt client: server closed the connection: %w", err)
				} else {
					err = fmt.Errorf("mqtt client: read: %w", err)
				}
			}
			cn.close(err)
			return
		}
		cn.lastRead.Store(cn.since())
		if err := cn.handle(h, body); err != nil {
			var pe *packet.Error
			if cn.v == packet.V5 && errors.As(err, &pe) {
				// Tell the server why, if the connection takes it soon.
				written := make(chan error, 1)
				if cn.send(&packet.Disconnect{Reason: pe.Reason}, func(err error) { written <- err }) == nil {
					t := time.NewTimer(time.Second)
					select {
					case <-written:
					case <-t.C:
					}
					t.Stop()
				}
			}
			cn.close(err)
			return
		}
	}
}

// handle acts on one packet from the server.
func (cn *conn) handle(h packet.FixedHeader, body []byte) error {
	c := cn.c
	if h.Type == packet.PUBLISH {
		// The message keeps its own copy of the body: one allocation, and the
		// payload handed to the handler aliases it.
		body = append([]byte(nil), body...)
	}
	pk, err := cn.dec.Decode(h, body)
	if err != nil {
		return fmt.Errorf("mqtt client: from server: %w", err)
	}
	switch p := pk.(type) {
	case *packet.Publish:
		return cn.handlePublish(p)

	case *packet.Ack:
		switch p.Kind {
		case packet.PUBACK, packet.PUBCOMP:
			c.mu.Lock()
			m := c.inflight[p.PacketID]
			want := byte(1)
			if p.Kind == packet.PUBCOMP {
				want = 2
			}
			if m == nil || m.pkt.QoS != want {
				c.mu.Unlock()
				c.opts.Logger.Debug("mqtt: acknowledgement for no message in flight", "type", p.Kind, "id", p.PacketID)
				return nil
			}
			delete(c.inflight, p.PacketID)
			fails := c.pumpLocked()
			c.mu.Unlock()
			var err error
			if p.Kind == packet.PUBACK {
				err = ackError(p, m)
			}
			// PUBCOMP: the server accepted the message with its PUBREC. Its
			// only failure, 0x92, answers a PUBREL sent again after the server
			// had already completed (and forgotten) the exchange.
			completion(m, err)()
			run(fails)
		case packet.PUBREC:
			c.mu.Lock()
			m := c.inflight[p.PacketID]
			if m == nil || m.pkt.QoS != 2 {
				c.mu.Unlock()
				// [MQTT-4.3.3] answer so that the server can let go.
				cn.sendAck(packet.PUBREL, p.PacketID, packet.PacketIdentifierNotFound)
				return nil
			}
			if p.Reason.IsError() {
				delete(c.inflight, p.PacketID)
				fails := c.pumpLocked()
				c.mu.Unlock()
				completion(m, ackError(p, m))()
				run(fails)
				return nil
			}
			m.released = true
			cn.sendAck(packet.PUBREL, p.PacketID, packet.Success)
			c.mu.Unlock()
		case packet.PUBREL:
			c.mu.Lock()
			delete(c.held, p.PacketID)
			c.mu.Unlock()
			cn.sendAck(packet.PUBCOMP, p.PacketID, packet.Success)
		}

	case *packet.Suback:
		return cn.handleAck(p.PacketID, packet.SUBSCRIBE, p.Reasons, p.Props.ReasonString)
	case *packet.Unsuback:
		return cn.handleAck(p.PacketID, packet.UNSUBSCRIBE, p.Reasons, p.Props.ReasonString)

	case *packet.Pingresp:
		cn.pingSent.Store(0)

	case *packet.Disconnect:
		return &ReasonError{Op: "server disconnect", Reason: p.Reason, ReasonString: string(p.Props.ReasonString)}

	default:
		return &packet.Error{Reason: packet.ProtocolError, Rule: "server sent " + pk.Type().String()}
	}
	return nil
}

func ackError(p *packet.Ack, m *outMsg) error {
	if !p.Reason.IsError() {
		return nil
	}
	return &ReasonError{Op: "publish", Reason: p.Reason, ReasonString: string(p.Props.ReasonString), Topic: string(m.pkt.Topic)}
}

// handlePublish resolves a topic alias and hands the message to the handler
// goroutine, with the acknowledgement to send once the handler has returned.
func (cn *conn) handlePublish(p *packet.Publish) error {
	c := cn.c
	topic := p.Topic
	if p.Props.Has(packet.PropTopicAlias) {
		a := int(p.Props.TopicAlias)
		if a == 0 || a >= len(cn.aliases) {
			return &packet.Error{Reason: packet.TopicAliasInvalid,
				Rule: fmt.Sprintf("[MQTT-3.3.2-9] topic alias %d is outside 1..%d", a, max(len(cn.aliases)-1, 0))}
		}
		if len(topic) > 0 {
			cn.aliases[a] = append(cn.aliases[a][:0], topic...)
		} else if topic = cn.aliases[a]; len(topic) == 0 {
			return &packet.Error{Reason: packet.ProtocolError, Rule: fmt.Sprintf("[MQTT-3.3.4] topic alias %d used before it was set", a)}
		}
	}
	d := delivery{cn: cn}
	switch p.QoS {
	case 0:
		d.m = messageFrom(p, topic)
	case 1:
		d.m = messageFrom(p, topic)
		d.ack, d.id = packet.PUBACK, p.PacketID
	case 2:
		d.ack, d.id = packet.PUBREC, p.PacketID
		c.mu.Lock()
		dup := c.held[p.PacketID]
		c.held[p.PacketID] = true
		c.mu.Unlock()
		if !dup {
			// Delivered once; a resend of the same id before PUBREL only
			// gets its PUBREC again.
			d.m = messageFrom(p, topic)
		}
	}
	select {
	case <-cn.done:
		return cn.dropped(p, d.m != nil)
	case c.deliveries <- d:
	default:
		cn.handing.Store(true)
		select {
		case c.deliveries <- d:
		case <-cn.done:
			cn.handing.Store(false)
			return cn.dropped(p, d.m != nil)
		}
		cn.handing.Store(false)
	}
	return nil
}

// dropped gives up a PUBLISH that arrived on a connection that has ended
// before its handler could take it, and stops the reader: the server sends
// it again, unacknowledged, and nothing read after it may be delivered
// before it.
func (cn *conn) dropped(p *packet.Publish, first bool) error {
	if p.QoS == 2 && first {
		c := cn.c
		c.mu.Lock()
		delete(c.held, p.PacketID) // not delivered: its resend must be
		c.mu.Unlock()
	}
	return ErrConnectionLost
}

// handleAck completes a SUBSCRIBE or UNSUBSCRIBE.
func (cn *conn) handleAck(id uint16, kind packet.Type, reasons []packet.ReasonCode, reasonString []byte) error {
	c := cn.c
	c.mu.Lock()
	req := c.requests[id]
	if req == nil || req.kind != kind {
		c.mu.Unlock()
		c.opts.Logger.Debug("mqtt: acknowledgement for no request", "type", kind, "id", id)
		return nil
	}
	delete(c.requests, id)
	reasons = append([]packet.ReasonCode(nil), reasons...)
	if kind == packet.SUBSCRIBE {
		g := req.group
		if req.internal {
			g.resend = false
		}
		if len(reasons) != len(g.subs) {
			c.mu.Unlock()
			return &packet.Error{Reason: packet.ProtocolError,
				Rule: fmt.Sprintf("[MQTT-3.8.4-6] SUBACK has %d reason codes for %d subscriptions", len(reasons), len(g.subs))}
		}
		var failed []string
		for i, rc := range reasons {
			if rc.IsError() {
				failed = append(failed, g.subs[i].Filter)
			}
		}
		for _, f := range failed {
			if req.internal {
				c.opts.Logger.Warn("mqtt: resubscription refused", "filter", f)
			}
			g.subs = removeFilter(g.subs, f)
		}
		if len(g.subs) == 0 {
			c.removeGroupLocked(g)
		}
	}
	c.mu.Unlock()
	req.done <- reqResult{reasons: reasons, reasonString: string(reasonString)}
	return nil
}

func removeFilter(subs []Subscription, f string) []Subscription {
	out := subs[:0]
	for _, s := range subs {
		if s.Filter != f {
			out = append(out, s)
		}
	}
	return out
}

// packetReader splits a byte stream into packets, reading as much as the
// connection has ready into one buffer.
type packetReader struct {
	r          io.Reader
	buf        []byte
	start, end int
}

// next returns the next packet's fixed header and body; body aliases the
// reader's buffer until the next call.
func (rd *packetReader) next(dec *packet.Decoder) (packet.FixedHeader, []byte, error) {
	for {
		h, n, err := packet.DecodeFixedHeader(rd.buf[rd.start:rd.end])
		if err != nil {
			return h, nil, err
		}
		need := rd.end - rd.start + 1
		if n > 0 {
			if err := dec.CheckSize(h, n); err != nil {
				return h, nil, err
			}
			total := n + h.Remaining
			if rd.end-rd.start >= total {
				body := rd.buf[rd.start+n : rd.start+total]
				rd.start += total
				return h, body, nil
			}
			need = total
		}
		rd.fill(need)
		m, err := rd.r.Read(rd.buf[rd.end:])
		rd.end += m
		if m == 0 && err != nil {
			return h, nil, err
		}
	}
}

// fill makes room for a packet of need bytes starting at start.
func (rd *packetReader) fill(need int) {
	if rd.start == rd.end {
		rd.start, rd.end = 0, 0
		if len(rd.buf) > 64<<10 && need <= 4096 {
			rd.buf = make([]byte, 4096) // shrink after a burst of large packets
		}
	}
	if len(rd.buf)-rd.start >= need && rd.end < len(rd.buf) {
		return
	}
	if rd.start > 0 {
		copy(rd.buf, rd.buf[rd.start:rd.end])
		rd.end -= rd.start
		rd.start = 0
	}
	if len(rd.buf) < need || rd.end == len(rd.buf) {
		nb := make([]byte, max(need, 2*len(rd.buf)))
		copy(nb, rd.buf[:rd.end])
		rd.buf = nb
	}
}
