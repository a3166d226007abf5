// Package forward is the benchmark's ceiling: a zero-logic "broker" that
// answers CONNECT and SUBSCRIBE minimally and copies every PUBLISH, byte for
// byte, to every subscribed connection, with no topic matching, sessions or
// queue limits (a slow subscriber holds its publishers back). QoS 1
// publishes are acknowledged at once; subscribers' PUBACKs are ignored. It
// must never grow smarter: what it reaches is what the machine and the load
// generator allow.
//
// It comes in two forms with the same contract: Serve, one goroutine per
// connection with a writer goroutine per subscriber, and Epoll (Linux), one
// epoll loop in one goroutine.
package forward

import (
	"bufio"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"

	"gatewayd/scripts/bench/internal/wire"
)

// pendingLimit is how many bytes may wait for one subscriber before its
// publishers block.
const pendingLimit = 8 << 20

type subscriber struct {
	conn    net.Conn
	mu      sync.Mutex
	cond    *sync.Cond
	pending []byte
	closed  bool
}

func (s *subscriber) enqueue(b []byte) {
	s.mu.Lock()
	for len(s.pending) > pendingLimit && !s.closed {
		s.cond.Wait()
	}
	if !s.closed {
		s.pending = append(s.pending, b...)
		s.cond.Broadcast()
	}
	s.mu.Unlock()
}

func (s *subscriber) writeLoop() {
	var out []byte
	for {
		s.mu.Lock()
		for len(s.pending) == 0 && !s.closed {
			s.cond.Wait()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		out, s.pending = s.pending, out[:0]
		s.cond.Broadcast()
		s.mu.Unlock()
		if _, err := s.conn.Write(out); err != nil {
			s.close()
			return
		}
	}
}

func (s *subscriber) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.conn.Close()
}

// Server forwards between the connections it accepts.
type Server struct {
	subsMu sync.Mutex
	subs   atomic.Pointer[[]*subscriber]
}

// Serve accepts connections on ln until it fails.
func Serve(ln net.Listener) error {
	s := &Server{}
	s.subs.Store(&[]*subscriber{})
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go s.serve(c)
	}
}

func (srv *Server) addSub(s *subscriber) {
	srv.subsMu.Lock()
	defer srv.subsMu.Unlock()
	old := *srv.subs.Load()
	next := append(append([]*subscriber(nil), old...), s)
	srv.subs.Store(&next)
}

func (srv *Server) removeSub(s *subscriber) {
	srv.subsMu.Lock()
	defer srv.subsMu.Unlock()
	var next []*subscriber
	for _, o := range *srv.subs.Load() {
		if o != s {
			next = append(next, o)
		}
	}
	srv.subs.Store(&next)
}

func (srv *Server) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 256<<10)
	rd := wire.Reader{R: r}
	var batch, reply []byte
	var me *subscriber
	defer func() {
		if me != nil {
			srv.removeSub(me)
			me.close()
		}
	}()
	for {
		// Hand over what was read when the read buffer is empty, or at 64 KiB:
		// with a steady stream the buffer may never be exactly empty.
		if r.Buffered() == 0 || len(batch) >= 64<<10 || len(reply) >= 256 {
			if len(batch) > 0 {
				for _, s := range *srv.subs.Load() {
					s.enqueue(batch)
				}
				batch = batch[:0]
			}
			if len(reply) > 0 {
				if _, err := c.Write(reply); err != nil {
					return
				}
				reply = reply[:0]
			}
		}
		first, body, n, err := rd.Next()
		if err != nil {
			return
		}
		switch first >> 4 {
		case wire.CONNECT:
			reply = wire.AppendConnack(reply)
		case wire.PUBLISH:
			raw, _ := r.Peek(n)
			batch = append(batch, raw...)
			if (first>>1)&3 > 0 {
				_, id, _, err := wire.ParsePublish(first, body)
				if err != nil {
					return
				}
				reply = wire.AppendPuback(reply, id)
			}
		case wire.SUBSCRIBE:
			if len(body) < 2 {
				return
			}
			id := binary.BigEndian.Uint16(body)
			var granted []byte
			for rest := body[2:]; len(rest) >= 3; {
				l := int(binary.BigEndian.Uint16(rest))
				if len(rest) < 3+l {
					return
				}
				granted = append(granted, rest[2+l])
				rest = rest[3+l:]
			}
			reply = wire.AppendSuback(reply, id, granted)
			if me == nil {
				me = &subscriber{conn: c}
				me.cond = sync.NewCond(&me.mu)
				go me.writeLoop()
				// The SUBACK goes through the subscriber's queue, ahead of any
				// PUBLISH, and the subscriber is registered before the client
				// can see the SUBACK and start publishing.
				me.enqueue(reply)
				reply = reply[:0]
				srv.addSub(me)
			}
		case wire.PINGREQ:
			reply = append(reply, wire.PINGRESP<<4, 0)
		case wire.DISCONNECT:
			return
		}
		rd.Release(n)
	}
}
