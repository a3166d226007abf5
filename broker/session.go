package broker

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
)

// neverExpires is the v5 Session Expiry Interval meaning "never".
const neverExpires = 0xFFFFFFFF

// session is the broker's side of an MQTT session: it outlives the connection
// when its expiry interval is not zero.
type session struct {
	id  string
	seq uint64 // creation order; routing sorts hits by it to merge overlaps

	// online mirrors conn != nil for shared-subscription picks, which run
	// under the index lock and must not take mu.
	online atomic.Bool

	mu      sync.Mutex
	conn    *conn
	ci      *ConnectInfo // of the current or last connection, for CanRead
	version packet.Version
	expiry  uint32 // seconds; 0: ends with the connection
	dead    bool   // removed from the server; deliveries are dropped
	gen     uint64 // bumped on attach and detach so stale timers do nothing

	subs map[string]state.Subscription // by filter as subscribed

	policy *clientPolicy // queue policy set for this client id; nil: the server's

	// Outbound QoS 1/2: pending is the FIFO of messages not yet sent (from
	// pendHead on); inflight holds sent ones by packet id.
	pending     []*outbound
	pendHead    int
	inflight    map[uint16]*outbound
	window      int  // in-flight limit for the current connection
	waiting     bool // some in-flight deliveries wait to be sent again (outbound.waiting)
	nextPID     uint16
	nextSeq     uint64
	queuedBytes int

	// Backpressure for QoS 1/2 (see Server.awaitQueue): publishers waiting
	// for the queue to shrink below the soft bound, the token that wakes
	// one, and whether the client failed to make progress within a wait
	// (until its next acknowledgement).
	waiters int32
	room    chan struct{}
	stalled bool

	// outq holds, in the order they must reach the client, the PUBLISH and
	// PUBREL packets of a stored session that wait for the batch recording
	// them (see holdLocked), and any sent after them.
	outq []*hold

	// inbound holds the QoS 2 ids received and awaiting PUBREL; the value
	// says whether PUBREC may be sent (the store has the message), so a
	// duplicate PUBLISH arriving before that is not acknowledged early.
	inbound map[uint16]bool

	will           *pendingWill // delayed will waiting for its time
	willTimer      *time.Timer
	expiryTimer    *time.Timer
	disconnectedAt time.Time
}

// outbound is one QoS 1/2 delivery in a session's queue.
type outbound struct {
	seq    uint64
	msg    *message
	qos    byte
	retain bool
	subIDs []uint32
	phase  state.Phase
	pid    uint16
	shared string // the "$share/..." filter it came through, "" if none
	// waiting: in flight from an earlier connection and not yet sent again
	// on this one, whose Receive Maximum had no room for it (see
	// resumeLocked).
	waiting bool
}

// hold is one PUBLISH (phase Sent) or PUBREL (phase Released) in a session's
// outq. The delivery is already in flight in memory (its packet id reserved,
// its window slot taken); the packet goes out once every hold before it has.
type hold struct {
	se    *session
	ob    *outbound
	phase state.Phase
	pid   uint16
	wait  bool  // the batch recording it is not durable yet
	err   error // that batch failed
}

// pendingWill is a will message with its delay.
type pendingWill struct {
	msg   *message
	delay uint32 // seconds (v5 Will Delay Interval)
	due   time.Time
}

func (s *Server) newSessionLocked(id string) *session {
	s.sessSeq++
	se := &session{
		id:   id,
		seq:  s.sessSeq,
		subs: make(map[string]state.Subscription),
	}
	se.policy = s.policyFor(id)
	s.sessions[id] = se
	return se
}

// stored reports whether the store keeps this session.
func (se *session) stored(s *Server) bool { return s.durable && se.expiry != 0 }

// wakeLocked gives one publisher waiting for the queue a chance to recheck.
func (se *session) wakeLocked() {
	select {
	case se.room <- struct{}{}:
	default:
	}
}

func (se *session) queueLen() int { return len(se.pending) - se.pendHead + len(se.inflight) }

func (se *session) record() *state.Session {
	rec := &state.Session{
		ClientID:       se.id,
		Version:        byte(se.version),
		ExpiryInterval: se.expiry,
		DisconnectedAt: se.disconnectedAt,
		Subscriptions:  make([]state.Subscription, 0, len(se.subs)),
	}
	for _, sub := range se.subs {
		rec.Subscriptions = append(rec.Subscriptions, sub)
	}
	return rec
}

// allocPID returns a packet id that is not in flight. The window is at most
// 65535, so a free id always exists.
func (se *session) allocPID() uint16 {
	for {
		se.nextPID++
		if se.nextPID == 0 {
			se.nextPID = 1
		}
		if _, used := se.inflight[se.nextPID]; !used {
			return se.nextPID
		}
	}
}

// enqueueLocked appends a QoS 1/2 delivery and sends what the window allows.
// It reports false when the queue is full and the message was dropped.
func (s *Server) enqueueLocked(se *session, ob *outbound, t *tx) bool {
	if se.policy != nil {
		if !s.admitPolicyLocked(se, ob, t) {
			return false
		}
	} else if s.cfg.MaxQueuedMessages > 0 && se.queueLen() >= s.cfg.MaxQueuedMessages ||
		s.cfg.MaxQueuedBytes > 0 && se.queuedBytes+ob.msg.size > s.cfg.MaxQueuedBytes {
		s.stats.dropped.Add(1)
		s.stats.queueDrops.Add(1)
		return false
	}
	se.nextSeq++
	ob.seq = se.nextSeq
	ob.phase = state.Queued
	se.pending = append(se.pending, ob)
	se.queuedBytes += ob.msg.size
	s.stats.queued.Add(1)
	if se.stored(s) {
		t.putMessage(ob.msg)
		t.add(state.Op{Kind: state.OpEnqueue, ClientID: se.id, Outbound: ob.record()})
	}
	s.pumpLocked(se, t)
	return true
}

func (ob *outbound) record() *state.Outbound {
	return &state.Outbound{
		Seq:        ob.seq,
		MessageID:  ob.msg.ID,
		QoS:        ob.qos,
		SubIDs:     ob.subIDs,
		RetainFlag: ob.retain,
		Phase:      ob.phase,
		PacketID:   ob.pid,
	}
}

// removeLocked forgets a delivery that is complete or dropped.
func (s *Server) removeLocked(se *session, ob *outbound, t *tx) {
	se.queuedBytes -= ob.msg.size
	s.stats.queued.Add(-1)
	if se.waiters > 0 {
		se.wakeLocked() // progress: a waiting publisher rechecks
	}
	if se.stored(s) {
		t.add(state.Op{Kind: state.OpDequeue, ClientID: se.id, Seq: ob.seq})
	}
}

// pumpLocked sends queued messages while the in-flight window has room.
// Messages are encoded only here, so a slow client's backlog waits in the
// queue (bounded) rather than in its output buffer.
func (s *Server) pumpLocked(se *session, t *tx) {
	c := se.conn
	if c == nil {
		return
	}
	now := time.Now()
	if se.waiting && !s.resendWaitingLocked(se, t, now) {
		return
	}
	var p packet.Publish
	for se.pendHead < len(se.pending) && len(se.inflight) < se.window {
		ob := se.pending[se.pendHead]
		se.pending[se.pendHead] = nil
		se.pendHead++
		if !ob.fill(&p, now, false) || se.policy.tooOld(ob, now) {
			if se.policy.tooOld(ob, now) {
				se.policy.expired.Add(1)
			}
			s.stats.expired.Add(1)
			s.stats.dropped.Add(1)
			s.removeLocked(se, ob, t)
			continue
		}
		ob.pid = se.allocPID()
		p.PacketID = ob.pid
		// A QoS 2 PUBLISH to a stored session goes out only once the store
		// has its packet id (holdLocked): were the broker killed first, it
		// would give the id to another message after the restart, which the
		// client, still holding the first one awaiting PUBREL, would
		// acknowledge without delivering. A QoS 1 PUBLISH needs no wait: a
		// receiver keeps nothing per packet id, so the worst a restart can do
		// is send it again under a new id, which QoS 1 allows. It still waits
		// behind earlier held packets so the session's order is kept.
		if wait := ob.qos == 2 && se.stored(s); wait || len(se.outq) > 0 {
			if c.tooLargeFor(&p) {
				s.stats.tooLarge.Add(1)
				s.stats.dropped.Add(1)
				s.removeLocked(se, ob, t)
				continue
			}
			ob.phase = state.Sent
			if se.inflight == nil {
				se.inflight = make(map[uint16]*outbound)
			}
			se.inflight[ob.pid] = ob
			if wait {
				t.add(state.Op{Kind: state.OpUpdateOutbound, ClientID: se.id, Outbound: ob.record()})
			}
			s.holdLocked(se, t, ob, wait)
			continue
		}
		switch c.sendPublish(&p, keepAll) {
		case tooLarge:
			s.stats.tooLarge.Add(1)
			s.stats.dropped.Add(1)
			s.removeLocked(se, ob, t)
			continue
		case offline:
			// The connection is known to be closing: the message was never
			// sent, so it stays first in the queue and goes out without DUP
			// when the session resumes.
			ob.pid = 0
			se.pendHead--
			se.pending[se.pendHead] = ob
			return
		}
		// Anything else counts as sent, even if the connection turns out to
		// be dead: the message is redelivered with DUP set.
		ob.phase = state.Sent
		if se.inflight == nil {
			se.inflight = make(map[uint16]*outbound)
		}
		se.inflight[ob.pid] = ob
	}
	if se.pendHead == len(se.pending) {
		se.pending = se.pending[:0]
		se.pendHead = 0
		if cap(se.pending) > 64 {
			se.pending = nil
		}
	} else if se.pendHead > 64 && se.pendHead*2 > len(se.pending) {
		n := copy(se.pending, se.pending[se.pendHead:])
		clear(se.pending[n:])
		se.pending = se.pending[:n]
		se.pendHead = 0
	}
}

// tooLargeFor reports whether p exceeds the client's Maximum Packet Size, as
// sendPublish would find (a topic alias only makes it smaller).
func (c *conn) tooLargeFor(p *packet.Publish) bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.maxOut <= 0 {
		return false
	}
	p.Props.Clear(packet.PropTopicAlias)
	p.Props.TopicAlias = 0
	return p.Size(c.version) > c.maxOut
}

// holdLocked puts ob's next packet (PUBLISH for phase Sent, PUBREL for
// Released) at the end of se.outq. With wait, t holds the op recording that
// phase, and the packet goes out from the done of t's batch; without, it only
// keeps its place behind packets that wait.
func (s *Server) holdLocked(se *session, t *tx, ob *outbound, wait bool) {
	h := &hold{se: se, ob: ob, phase: ob.phase, pid: ob.pid, wait: wait}
	se.outq = append(se.outq, h)
	if wait {
		t.holds = append(t.holds, h)
	}
}

// releaseHolds runs when the batch holding holds is done: each session's
// outq is sent as far as nothing before waits.
func (s *Server) releaseHolds(holds []*hold, err error) {
	for i, h := range holds {
		if h == nil {
			continue
		}
		se := h.se
		se.mu.Lock()
		for j := i; j < len(holds); j++ {
			if g := holds[j]; g != nil && g.se == se {
				g.wait, g.err = false, err
				holds[j] = nil
			}
		}
		s.flushLocked(se)
		se.mu.Unlock()
	}
}

// flushLocked sends se.outq up to the first packet still waiting for the
// store, on the session's current connection. With no connection, nothing is
// sent: the deliveries stay in flight, recorded, and go out again (PUBLISH
// with DUP, or PUBREL) when the session resumes. A delivery acknowledged,
// dropped or handed to another session meanwhile is skipped.
//
// When the store failed a batch, the delivery goes back to what the store
// still has (a PUBLISH to the queue, its packet id free again; a PUBREL to
// phase Sent), and the client is disconnected without
// sending anything more: the session resumes from a state that matches the
// store, and the pump retries when the client is back.
func (s *Server) flushLocked(se *session) {
	c := se.conn
	now := time.Now()
	var p packet.Publish
	failed := false
	n := 0
	for ; n < len(se.outq); n++ {
		h := se.outq[n]
		if h.wait {
			break
		}
		ob := h.ob
		if se.inflight[h.pid] != ob || ob.phase != h.phase {
			continue
		}
		if h.err != nil {
			// Counted and logged by the batch's own done.
			failed = true
			if h.phase == state.Released {
				ob.phase = state.Sent
				continue
			}
			delete(se.inflight, h.pid)
			ob.phase, ob.pid = state.Queued, 0
			i := se.pendHead
			for i < len(se.pending) && se.pending[i].seq < ob.seq {
				i++
			}
			se.pending = slices.Insert(se.pending, i, ob)
			continue
		}
		if c == nil || failed {
			continue
		}
		if h.phase == state.Released {
			c.sendAck(packet.PUBREL, h.pid, packet.Success, "")
			continue
		}
		if !ob.fill(&p, now, false) {
			// It expired while its record was written: send it with what
			// is left, the least the interval may say.
			p.Props.MessageExpiry = 1
			p.Props.Set(packet.PropMessageExpiry)
		}
		if c.sendPublish(&p, keepAll) == tooLarge {
			// Checked before it was held, so the encoding failed: the
			// session resumes without it (resumeLocked drops it).
			failed = true
		}
	}
	clear(se.outq[:n])
	se.outq = se.outq[n:]
	if len(se.outq) == 0 {
		se.outq = nil
	}
	if failed && c != nil {
		s.log.Warn("broker: disconnecting the client to resume its session from the stored state", "client", se.id)
		c.closeNow()
	}
}

// fill prepares p to deliver ob. It reports false when the message expired.
func (ob *outbound) fill(p *packet.Publish, now time.Time, dup bool) bool {
	ob.msg.publish(p)
	p.Dup, p.QoS, p.Retain, p.PacketID = dup, ob.qos, ob.retain, ob.pid
	p.Props.SubscriptionIDs = ob.subIDs
	return setExpiry(&p.Props, ob.msg.Expiry, now)
}

// setExpiry sets the Message Expiry Interval to the time left, rounded up;
// it reports false when none is left.
func setExpiry(pr *packet.Properties, expiry, now time.Time) bool {
	if expiry.IsZero() {
		pr.Clear(packet.PropMessageExpiry)
		return true
	}
	left := expiry.Sub(now)
	if left <= 0 {
		return false
	}
	pr.MessageExpiry = uint32((left + time.Second - 1) / time.Second)
	pr.Set(packet.PropMessageExpiry)
	return true
}

// resumeLocked redelivers what was in flight when the session's previous
// connection ended (PUBLISH with DUP for phase Sent, PUBREL for Released), in
// the original order, then sends queued messages.
func (s *Server) resumeLocked(se *session, t *tx) {
	c := se.conn
	if len(se.inflight) > 0 {
		// Deliveries still in outq go out from there, in order, once the
		// store has them.
		var held map[*outbound]bool
		if len(se.outq) > 0 {
			held = make(map[*outbound]bool, len(se.outq))
			for _, h := range se.outq {
				held[h.ob] = true
			}
		}
		obs := make([]*outbound, 0, len(se.inflight))
		for _, ob := range se.inflight {
			ob.waiting = false
			if !held[ob] {
				obs = append(obs, ob)
			}
		}
		se.waiting = false
		slices.SortFunc(obs, func(a, b *outbound) int { return cmpU64(a.seq, b.seq) })
		now := time.Now()
		var p packet.Publish
		sent := 0
		for _, ob := range obs {
			if ob.phase == state.Released {
				c.sendAck(packet.PUBREL, ob.pid, packet.Success, "")
				continue
			}
			if sent >= se.window {
				// The new connection's Receive Maximum is full: the rest
				// go as acknowledgements make room (pumpLocked).
				ob.waiting, se.waiting = true, true
				continue
			}
			if s.resendLocked(se, ob, &p, now, t) {
				sent++
			}
		}
	}
	s.pumpLocked(se, t)
}

// resendLocked sends an in-flight PUBLISH again (DUP) on se's connection,
// and reports whether it went: one that expired meanwhile or is too large
// for the client is dropped and counted.
func (s *Server) resendLocked(se *session, ob *outbound, p *packet.Publish, now time.Time, t *tx) bool {
	dropped := &s.stats.expired
	if ob.fill(p, now, true) {
		if se.conn.sendPublish(p, keepAll) != tooLarge {
			return true
		}
		dropped = &s.stats.tooLarge
	}
	delete(se.inflight, ob.pid)
	dropped.Add(1)
	s.stats.dropped.Add(1)
	s.removeLocked(se, ob, t)
	return false
}

// resendWaitingLocked sends again, oldest first, the in-flight deliveries
// waiting for room in the client's Receive Maximum (see resumeLocked), as
// far as there is room; it reports whether none is left waiting.
func (s *Server) resendWaitingLocked(se *session, t *tx, now time.Time) bool {
	var ws []*outbound
	for _, ob := range se.inflight {
		if ob.waiting && ob.phase == state.Sent {
			ws = append(ws, ob)
		} else {
			ob.waiting = false // acknowledged with PUBREC meanwhile: PUBREL went
		}
	}
	slices.SortFunc(ws, func(a, b *outbound) int { return cmpU64(a.seq, b.seq) })
	active := len(se.inflight) - len(ws)
	var p packet.Publish
	for _, ob := range ws {
		if active >= se.window {
			return false
		}
		ob.waiting = false
		if s.resendLocked(se, ob, &p, now, t) {
			active++
		}
	}
	se.waiting = false
	return true
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// acked handles PUBACK, PUBREC and PUBCOMP for the broker's outbound messages.
func (c *conn) acked(a *packet.Ack) {
	s, se := c.s, c.sess
	t := s.begin()
	se.mu.Lock()
	se.stalled = false // the client is making progress
	ob := se.inflight[a.PacketID]
	switch a.Kind {
	case packet.PUBACK:
		if ob != nil && ob.qos == 1 {
			delete(se.inflight, a.PacketID)
			s.removeLocked(se, ob, &t)
		}
	case packet.PUBREC:
		switch {
		case ob == nil || ob.qos != 2:
			if c.version == packet.V5 {
				c.sendAck(packet.PUBREL, a.PacketID, packet.PacketIdentifierNotFound, "")
			} else {
				c.sendAck(packet.PUBREL, a.PacketID, packet.Success, "")
			}
		case a.Reason.IsError():
			// The client refused the message: the flow ends here.
			delete(se.inflight, a.PacketID)
			s.removeLocked(se, ob, &t)
		default:
			// As for a QoS 2 PUBLISH, PUBREL goes out once the store says
			// Released: were the broker killed first, the message would be
			// sent again as a PUBLISH the client has already received.
			ob.phase = state.Released
			if se.stored(s) {
				t.add(state.Op{Kind: state.OpUpdateOutbound, ClientID: se.id, Outbound: ob.record()})
				s.holdLocked(se, &t, ob, true)
			} else if len(se.outq) > 0 {
				s.holdLocked(se, &t, ob, false)
			} else {
				c.sendAck(packet.PUBREL, a.PacketID, packet.Success, "")
			}
		}
	case packet.PUBCOMP:
		if ob != nil && ob.qos == 2 && ob.phase == state.Released {
			delete(se.inflight, a.PacketID)
			s.removeLocked(se, ob, &t)
		}
	}
	s.pumpLocked(se, &t)
	se.mu.Unlock()
	t.commit(nil)
}

// takeSharedLocked removes the deliveries that came through shared
// subscriptions and have not reached the client (queued, or sent at QoS 1
// and not acknowledged), so that another member of the group can have them.
func (s *Server) takeSharedLocked(se *session, t *tx) []*outbound {
	var out []*outbound
	keep := se.pending[:se.pendHead]
	for _, ob := range se.pending[se.pendHead:] {
		if ob.shared != "" {
			out = append(out, ob)
			s.removeLocked(se, ob, t)
		} else {
			keep = append(keep, ob)
		}
	}
	clear(se.pending[len(keep):])
	se.pending = keep
	// A QoS 2 delivery already sent stays: it is completed to this client
	// if it comes back, and to nobody else [MQTT-4.8.2-4], [MQTT-4.8.2-5].
	for pid, ob := range se.inflight {
		if ob.shared != "" && ob.qos == 1 && ob.phase == state.Sent {
			delete(se.inflight, pid)
			out = append(out, ob)
			s.removeLocked(se, ob, t)
		}
	}
	slices.SortFunc(out, func(a, b *outbound) int { return cmpU64(a.seq, b.seq) })
	return out
}
