package broker

import (
	"slices"
	"time"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
	"gatewayd/broker/topics"
)

type hit = topics.Hit[*session, state.Subscription]

// route is the scratch space for routing one PUBLISH, pooled so that routing
// allocates nothing in the steady state.
type route struct {
	s      *Server
	hits   []hit
	shared []hit
	pickFn func(group, filter string, members []hit)
	pub    packet.Publish // the outgoing PUBLISH, adjusted per subscriber
	subIDs []uint32
	timer  *time.Timer // bounds a wait for a slow subscriber; made on first use
	// inline: the message may still be written inline to one subscriber
	// (see conn.kickInlineLocked); one at most, so that the publisher's
	// goroutine does not do the writes of a large fan-out itself.
	inline bool
}

// startTimer arms r.timer to fire after d.
func (r *route) startTimer(d time.Duration) *time.Timer {
	if r.timer == nil {
		r.timer = time.NewTimer(d)
	} else {
		r.timer.Reset(d)
	}
	return r.timer
}

func newRoute(s *Server) *route {
	r := &route{s: s}
	r.pickFn = r.pick // bound once: a method value per call would allocate
	return r
}

// pick chooses one member of a shared subscription group: the next connected
// one in round-robin order, or (none connected) one whose persistent session
// will get it later.
func (r *route) pick(_, _ string, members []hit) {
	n := len(members)
	if n == 0 {
		return
	}
	start := int(r.s.rr.Add(1) % uint64(n))
	for i := range n {
		if h := members[(start+i)%n]; h.Key.online.Load() {
			r.shared = append(r.shared, h)
			return
		}
	}
	r.shared = append(r.shared, members[start])
}

// pubSource is a message being routed: the PUBLISH as received (aliasing the
// read buffer) and, built only when something must keep it, a message.
type pubSource struct {
	p      *packet.Publish // Props carries no topic alias
	topic  string          // may alias the read buffer
	origin string
	expiry time.Time
	now    time.Time
	msg    *message
	// canWait: a client's PUBLISH, whose reader may wait for a slow
	// subscriber (SlowConsumerWait).
	canWait bool
	// from is the publishing connection (see conn.mayBlock).
	from *conn
	// slow is the first online session the message was queued for whose
	// queue is beyond the soft bound: the publisher waits for it once the
	// message is routed and committed.
	slow *session
}

func (src *pubSource) message(s *Server) *message {
	if src.msg == nil {
		src.msg = newMessage(s.nextMsg.Add(1)-1, src.p, src.topic, src.origin, src.expiry, src.now)
	}
	return src.msg
}

// route delivers src to every matching subscription, once per session, and
// handles its retained slot. Store operations go to t.
func (s *Server) route(src *pubSource, t *tx) {
	p := src.p
	if p.Retain && s.cfg.RetainAvailable {
		if len(p.Payload) == 0 {
			if _, ok := s.deleteRetained(src.topic, nil); ok && (src.msg == nil || !src.msg.internal) {
				t.add(state.Op{Kind: state.OpClearRetained, Topic: src.topic})
			}
		} else {
			m := src.message(s)
			switch {
			case !s.setRetained(m, true):
				// Checked before routing; another publisher took the room
				// meanwhile. The message goes out but is not retained.
				s.stats.retainedRefused.Add(1)
			case !m.internal:
				t.putMessage(m)
				t.add(state.Op{Kind: state.OpSetRetained, Topic: m.Topic, MessageID: m.ID})
			}
		}
	}

	r := s.routes.Get().(*route)
	r.inline = true
	r.hits = s.subs.Match(src.topic, r.hits[:0], r.pickFn)
	hits := r.hits
	if len(hits) > 1 {
		slices.SortFunc(hits, func(a, b hit) int { return cmpU64(a.Key.seq, b.Key.seq) })
	}
	for i := 0; i < len(hits); {
		se := hits[i].Key
		qos, rap, any := byte(0), false, false
		r.subIDs = r.subIDs[:0]
		for ; i < len(hits) && hits[i].Key == se; i++ {
			o := &hits[i].Value
			if o.NoLocal && se.id == src.origin {
				continue
			}
			any = true
			qos = max(qos, min(o.QoS, p.QoS))
			rap = rap || o.RetainAsPublished
			if o.ID != 0 {
				r.subIDs = append(r.subIDs, o.ID)
			}
		}
		if any {
			s.deliver(r, se, src, qos, rap && p.Retain, r.subIDs, "", t)
		}
	}
	for _, h := range r.shared {
		r.subIDs = r.subIDs[:0]
		if h.Value.ID != 0 {
			r.subIDs = append(r.subIDs, h.Value.ID)
		}
		s.deliver(r, h.Key, src, min(h.Value.QoS, p.QoS), h.Value.RetainAsPublished && p.Retain, r.subIDs, h.Filter, t)
	}
	clear(r.hits) // drop session pointers so the pool does not pin them
	clear(r.shared)
	r.hits, r.shared = r.hits[:0], r.shared[:0]
	r.inline = false
	s.routes.Put(r)
}

// deliver gives one session one message. QoS 0 goes straight into the
// client's output buffer (or is dropped when it is offline or too slow);
// QoS 1/2 goes through the session queue.
//
// A client's QoS 0 PUBLISH that does not fit a subscriber's output buffer
// waits, holding no lock, for that subscriber's writer to make room, as long
// as the writer makes progress at least every SlowConsumerWait (see
// awaitRoom). Not with t holding the store lock (a
// retained message with a durable store): then it is dropped at once.
func (s *Server) deliver(r *route, se *session, src *pubSource, qos byte, retain bool, subIDs []uint32, shared string, t *tx) {
	se.mu.Lock()
	c := s.deliverLocked(r, se, src, qos, retain, subIDs, shared, t)
	se.mu.Unlock()
	if c == nil {
		return
	}
	if src.from != nil {
		src.from.mayBlock()
	}
	p := &r.pub
	tm := r.startTimer(s.cfg.SlowConsumerWait)
	for {
		mode := waitIfFull
		if !c.awaitRoom(p, tm, s.cfg.SlowConsumerWait) {
			mode = dropIfFull
		}
		se.mu.Lock()
		res := offline
		if se.conn == c && !se.dead {
			res = c.sendPublish(p, mode)
		}
		se.mu.Unlock()
		if res != noRoom {
			s.countSend(res)
			break
		}
	}
	tm.Stop()
	p.Props.SubscriptionIDs = nil
}

// countSend counts a QoS 0 PUBLISH that was not sent.
func (s *Server) countSend(res sendResult) {
	switch res {
	case full:
		s.stats.dropped.Add(1)
		s.stats.slowDrops.Add(1)
	case tooLarge:
		s.stats.dropped.Add(1)
		s.stats.tooLarge.Add(1)
	}
}

// deliverLocked is deliver for a caller that holds se.mu. It returns the
// connection to wait for when a QoS 0 message found no room there and may
// wait (r.pub then holds it, ready to send).
func (s *Server) deliverLocked(r *route, se *session, src *pubSource, qos byte, retain bool, subIDs []uint32, shared string, t *tx) *conn {
	if se.dead {
		return nil
	}
	if s.authz != nil && se.ci != nil && !s.authz.CanRead(se.ci, src.topic) {
		return nil
	}
	c := se.conn
	if qos == 0 && se.policy != nil && se.policy.UpgradeQoS {
		qos = 1 // the client's policy queues QoS 0 too (see ClientPolicy)
	}
	wait := src.canWait && s.cfg.SlowConsumerWait > 0
	if qos == 0 {
		if c == nil {
			return nil
		}
		p := &r.pub
		*p = *src.p
		p.Dup, p.QoS, p.Retain, p.PacketID = false, 0, retain, 0
		p.Props.SubscriptionIDs = subIDs
		if !setExpiry(&p.Props, src.expiry, src.now) {
			s.stats.expired.Add(1)
			s.stats.dropped.Add(1)
			return nil
		}
		mode := dropIfFull
		if wait && !t.locked {
			mode = waitIfFull
		}
		res := c.sendPublishInline(p, mode, r.inline)
		r.inline = false
		if res == noRoom {
			return c
		}
		s.countSend(res)
		p.Props.SubscriptionIDs = nil
		return nil
	}
	if c == nil && se.expiry == 0 {
		return nil
	}
	ob := &outbound{msg: src.message(s), qos: qos, retain: retain, shared: shared}
	if len(subIDs) > 0 {
		ob.subIDs = slices.Clone(subIDs)
	}
	if s.enqueueLocked(se, ob, t) && wait && c != nil && src.slow == nil && !se.stalled && se.queuedBytes > s.cfg.MaxOutputBytes {
		src.slow = se
	}
	return nil
}

// awaitQueue waits, holding no lock, until the queue of se, online, holds no
// more than the soft bound (MaxOutputBytes), as long as the client
// acknowledges something at least every SlowConsumerWait. When it does not,
// se is marked stalled: nobody waits for it again
// until the client acknowledges a message.
func (s *Server) awaitQueue(se *session) {
	r := s.routes.Get().(*route)
	tm := r.startTimer(s.cfg.SlowConsumerWait)
	soft := s.cfg.MaxOutputBytes
	se.mu.Lock()
	for se.conn != nil && !se.dead && !se.stalled && se.queuedBytes > soft {
		if se.room == nil {
			se.room = make(chan struct{}, 1)
		}
		se.waiters++
		se.mu.Unlock()
		timedOut := false
		select {
		case <-se.room:
			tm.Reset(s.cfg.SlowConsumerWait)
		case <-tm.C:
			timedOut = true
		}
		se.mu.Lock()
		se.waiters--
		if timedOut {
			if se.queuedBytes > soft && !se.stalled {
				se.stalled = true
				s.stats.slowStalls.Add(1)
			}
			break
		}
	}
	if se.waiters > 0 && (se.queuedBytes <= soft || se.conn == nil || se.dead) {
		se.wakeLocked() // the next waiter sees it too
	}
	se.mu.Unlock()
	tm.Stop()
	s.routes.Put(r)
}

// publishMessage routes a message the broker built itself (a $SYS value) in
// a batch of its own; wills go through routeMessage in the batch that deletes
// them (publishWill).
func (s *Server) publishMessage(m *message) {
	t := s.begin()
	s.routeMessage(m, &t)
	t.commit(nil)
}

// routeMessage routes m, unless it has expired, with what it stores in t.
func (s *Server) routeMessage(m *message, t *tx) {
	var p packet.Publish
	m.publish(&p)
	src := pubSource{p: &p, topic: m.Topic, origin: m.Origin, expiry: m.Expiry, now: time.Now(), msg: m}
	if src.expiry.IsZero() || src.now.Before(src.expiry) {
		s.route(&src, t)
	}
}

// handlePublish handles a PUBLISH from the client.
func (c *conn) handlePublish(p *packet.Publish) bool {
	s := c.s
	v5 := c.version == packet.V5
	if len(p.Props.SubscriptionIDs) > 0 {
		c.s.stats.protocolErrors.Add(1)
		c.disconnect(packet.ProtocolError, "[MQTT-3.3.4-6] PUBLISH from a client carries a subscription identifier")
		return false
	}
	if p.Props.Has(packet.PropTopicAlias) {
		a := p.Props.TopicAlias
		if a == 0 || a > s.cfg.TopicAliasMaximum {
			c.disconnect(packet.TopicAliasInvalid, "topic alias "+itoa(int(a))+" is outside 1.."+itoa(int(s.cfg.TopicAliasMaximum)))
			return false
		}
		if len(p.Topic) > 0 {
			if c.inAliases == nil {
				c.inAliases = make([]string, int(s.cfg.TopicAliasMaximum)+1)
			}
			if c.inAliases[a] != stringOf(p.Topic) {
				c.inAliases[a] = string(p.Topic)
			}
		} else {
			if int(a) >= len(c.inAliases) || c.inAliases[a] == "" {
				c.disconnect(packet.ProtocolError, "topic alias "+itoa(int(a))+" is not set")
				return false
			}
			p.Topic = bytesOf(c.inAliases[a])
		}
		p.Props.Clear(packet.PropTopicAlias)
		p.Props.TopicAlias = 0
	}
	if len(p.Topic) == 0 {
		c.disconnect(packet.ProtocolError, "PUBLISH without topic name or alias")
		return false
	}
	if p.QoS > s.cfg.MaximumQoS {
		c.disconnect(packet.QoSNotSupported, "QoS "+itoa(int(p.QoS))+" is above the maximum "+itoa(int(s.cfg.MaximumQoS)))
		return false
	}
	if p.Retain && !s.cfg.RetainAvailable {
		c.disconnect(packet.RetainNotSupported, "retained messages are disabled")
		return false
	}
	if p.QoS > 0 && v5 && c.inflightIn.Load() >= int32(s.cfg.ReceiveMaximum) {
		c.disconnect(packet.ReceiveMaximumExceeded, "more than "+itoa(int(s.cfg.ReceiveMaximum))+" QoS 1/2 messages in flight")
		return false
	}
	s.stats.pubRecv[p.QoS&3].Add(1)
	s.stats.pubBytesRecv[p.QoS&3].Add(uint64(len(p.Payload)))
	topic := stringOf(p.Topic)
	// Topics starting with '$' belong to the broker ($SYS): clients must not
	// forge them.
	if topic[0] == '$' || s.authz != nil && !s.authz.CanPublish(c.ci, topic) {
		s.stats.publishDenied.Add(1)
		s.log.Info("broker: publish refused", "client", c.ci.ClientID, "remote", c.remote(), "topic", topic)
		switch p.QoS {
		case 1:
			c.sendAck(packet.PUBACK, p.PacketID, packet.NotAuthorized, "not authorised to publish to "+topic)
		case 2:
			c.sendAck(packet.PUBREC, p.PacketID, packet.NotAuthorized, "not authorised to publish to "+topic)
		}
		return true
	}
	if p.Retain && len(p.Payload) > 0 && !s.retainFits(topic, retainedSize(topic, p.Payload)) {
		s.stats.retainedRefused.Add(1)
		s.log.Info("broker: retained message refused: max_retained_messages or max_retained_bytes reached",
			"client", c.ci.ClientID, "remote", c.remote(), "topic", topic)
		switch p.QoS {
		case 1:
			c.sendAck(packet.PUBACK, p.PacketID, packet.QuotaExceeded, "retained message limit reached")
		case 2:
			c.sendAck(packet.PUBREC, p.PacketID, packet.QuotaExceeded, "retained message limit reached")
		}
		return true
	}
	se := c.sess
	var t tx
	if p.QoS == 0 && !p.Retain && !s.upgradesQoS0() {
		t = s.beginTransient()
	} else {
		t = s.begin()
	}
	if p.QoS == 2 {
		se.mu.Lock()
		acked, dup := se.inbound[p.PacketID]
		if !dup {
			if se.inbound == nil {
				se.inbound = make(map[uint16]bool)
			}
			se.inbound[p.PacketID] = false
			if se.stored(s) {
				t.add(state.Op{Kind: state.OpPutInbound, ClientID: se.id, PacketID: p.PacketID})
			}
		}
		se.mu.Unlock()
		if dup {
			// Already routed: exactly once means not again. PUBREC goes out
			// now if the first copy's has; otherwise the store's done sends it.
			t.commit(nil)
			if acked {
				c.sendAck(packet.PUBREC, p.PacketID, packet.Success, "")
			}
			return true
		}
	}
	src := pubSource{p: p, topic: topic, origin: c.ci.ClientID, now: time.Now(), canWait: true, from: c}
	if p.Props.Has(packet.PropMessageExpiry) {
		src.expiry = src.now.Add(time.Duration(p.Props.MessageExpiry) * time.Second)
	}
	s.route(&src, &t)
	if p.QoS == 0 {
		t.commit(nil)
		return true
	}
	c.inflightIn.Add(1)
	t.commitAck(c, p.QoS, p.PacketID)
	if src.slow != nil {
		c.mayBlock()
		s.awaitQueue(src.slow)
	}
	return true
}

// ackStored acknowledges an inbound QoS 1/2 PUBLISH once the batch that
// records it is stored (err nil) or has failed: the acknowledgement is the
// broker's promise to deliver, so it goes out only once the store has
// everything the message needs (see tx.commitAck).
func (c *conn) ackStored(qos byte, id uint16, err error) {
	kind := packet.PUBACK
	if qos == 2 {
		kind = packet.PUBREC
	}
	if qos == 1 || err != nil {
		c.inflightIn.Add(-1)
	}
	if err == nil {
		if qos == 2 {
			se := c.sess
			se.mu.Lock()
			if _, ok := se.inbound[id]; ok {
				se.inbound[id] = true
			}
			se.mu.Unlock()
		}
		c.sendAck(kind, id, packet.Success, "")
		return
	}
	c.s.stats.storeFailures.Add(1)
	c.s.log.Warn("broker: message not stored, refusing it", "client", c.clientID(), "packet_id", id, "err", err)
	if qos == 2 {
		se := c.sess
		se.mu.Lock()
		delete(se.inbound, id)
		se.mu.Unlock()
	}
	if c.version == packet.V5 {
		c.sendAck(kind, id, packet.QuotaExceeded, "message could not be stored")
		return
	}
	// 3.1.1 has no negative acknowledgement: closing makes the client
	// send the message again later.
	c.closeNow()
}

// released handles PUBREL: the inbound QoS 2 flow ends with PUBCOMP.
func (c *conn) released(a *packet.Ack) {
	s, se := c.s, c.sess
	id := a.PacketID
	t := s.begin()
	se.mu.Lock()
	_, ok := se.inbound[id]
	stored := false
	if ok {
		delete(se.inbound, id)
		if se.stored(s) {
			stored = true
			t.add(state.Op{Kind: state.OpDeleteInbound, ClientID: se.id, PacketID: id})
		}
	}
	se.mu.Unlock()
	if !stored {
		t.commit(nil)
		c.completed(ok, id, nil)
		return
	}
	// PUBCOMP frees the packet id for the client's next message: it goes
	// out once the store has forgotten the id too, or a restart would take
	// that next message for a duplicate of this one and drop it.
	t.commit(func(err error) { c.completed(true, id, err) })
}

// completed ends an inbound QoS 2 flow once its packet id is released (err:
// the store could not forget it).
func (c *conn) completed(ok bool, id uint16, err error) {
	if err != nil {
		c.s.stats.storeFailures.Add(1)
		c.s.log.Warn("broker: QoS 2 release not stored, closing the connection", "client", c.clientID(), "packet_id", id, "err", err)
		// The id stays taken; the client sends PUBREL again when it
		// comes back, and the release is tried again.
		se := c.sess
		se.mu.Lock()
		if !se.dead && se.inbound != nil {
			se.inbound[id] = true
		}
		se.mu.Unlock()
		c.closeNow()
		return
	}
	if ok && c.inflightIn.Load() > 0 {
		c.inflightIn.Add(-1)
	}
	reason := packet.Success
	if !ok && c.version == packet.V5 {
		reason = packet.PacketIdentifierNotFound
	}
	c.sendAck(packet.PUBCOMP, id, reason, "")
}
