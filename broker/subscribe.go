package broker

import (
	"time"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
	"gatewayd/broker/topics"
)

// handleSubscribe adds or replaces subscriptions, answers SUBACK with one
// reason per filter, then sends the retained messages each subscription asks
// for.
//
// Adding the subscriptions, sending SUBACK and queueing the retained copies
// is one step under the session's lock, which every delivery to the session
// takes: a PUBLISH routed through a new subscription reaches the client only
// after the retained copies, so a new subscriber never gets a retained value
// older than a live one on the same topic [MQTT-4.6.0-6] and a state topic
// does not end on a stale value. (Were the subscription live before the
// retained lookup, a message routed in between would be queued ahead of the
// older retained copy read just before it.) The cost: deliveries to this
// one session, and the publishers routing them, wait while its retained
// messages are looked up and queued, which grows with the number a filter
// matches; with a durable store, storeMu stays held over that too. Other
// sessions and the QoS 0 path take no extra lock.
func (c *conn) handleSubscribe(p *packet.Subscribe) bool {
	s, se := c.s, c.sess
	v5 := c.version == packet.V5
	var subID uint32
	if len(p.Props.SubscriptionIDs) > 0 {
		subID = p.Props.SubscriptionIDs[0]
	}
	fail := func(r packet.ReasonCode) packet.ReasonCode {
		if v5 {
			return r
		}
		return packet.V3SubackFailure
	}
	reasons := make([]packet.ReasonCode, len(p.Subscriptions))
	subs := make([]state.Subscription, len(p.Subscriptions))
	accepted := make([]bool, len(p.Subscriptions))
	t := s.begin()
	for i, sub := range p.Subscriptions {
		filter := string(sub.Filter)
		_, _, shared := topics.SplitShared(filter)
		switch {
		case !topics.ValidFilter(filter):
			reasons[i] = fail(packet.TopicFilterInvalid)
			continue
		case shared && sub.NoLocal && v5:
			t.commit(nil)
			s.stats.protocolErrors.Add(1)
			c.disconnect(packet.ProtocolError, "no local on a shared subscription")
			return false
		case s.authz != nil && !s.authz.CanSubscribe(c.ci, filter):
			s.stats.subscribeDenied.Add(1)
			s.log.Info("broker: subscribe refused", "client", c.ci.ClientID, "remote", c.remote(), "filter", filter)
			reasons[i] = fail(packet.NotAuthorized)
			continue
		}
		subs[i] = state.Subscription{
			Filter:            filter,
			QoS:               min(sub.QoS, s.cfg.MaximumQoS),
			NoLocal:           sub.NoLocal,
			RetainAsPublished: sub.RetainAsPublished,
			RetainHandling:    sub.RetainHandling,
			ID:                subID,
		}
		accepted[i] = true
	}
	var wantRetained []state.Subscription
	se.mu.Lock()
	for i, opts := range subs {
		if !accepted[i] {
			continue
		}
		filter := opts.Filter
		_, existed := se.subs[filter]
		if !existed && s.cfg.MaxSubscriptionsPerClient > 0 && len(se.subs) >= s.cfg.MaxSubscriptionsPerClient {
			s.stats.subsRefused.Add(1)
			s.log.Info("broker: subscription refused: max_subscriptions_per_client reached", "client", c.ci.ClientID,
				"remote", c.remote(), "filter", filter, "max", s.cfg.MaxSubscriptionsPerClient)
			reasons[i] = fail(packet.QuotaExceeded)
			continue
		}
		se.subs[filter] = opts
		s.subs.Subscribe(se, filter, opts)
		reasons[i] = packet.ReasonCode(opts.QoS)
		// No retained messages for shared subscriptions [MQTT-4.8.2-...]; retain
		// handling 1 sends them only for a new subscription, 2 never.
		_, _, shared := topics.SplitShared(filter)
		if !shared && s.cfg.RetainAvailable && (opts.RetainHandling == 0 || opts.RetainHandling == 1 && !existed) {
			wantRetained = append(wantRetained, opts)
		}
	}
	if se.stored(s) {
		t.add(state.Op{Kind: state.OpPutSession, Session: se.record()})
	}
	c.send(&packet.Suback{PacketID: p.PacketID, Reasons: reasons})
	var expired []*message
	for _, opts := range wantRetained {
		expired = s.queueRetainedLocked(se, opts, &t, expired)
	}
	se.mu.Unlock()
	t.commit(nil)
	if len(expired) > 0 {
		s.dropExpiredRetained(expired)
	}
	return true
}

// queueRetainedLocked delivers the retained messages matching a new
// subscription, with the retain flag set, and appends to expired those whose
// expiry passed, for the caller to drop once it has released se.mu. The
// caller holds se.mu (see handleSubscribe).
func (s *Server) queueRetainedLocked(se *session, opts state.Subscription, t *tx, expired []*message) []*message {
	var ms []*message
	now := time.Now()
	s.retained.Match(opts.Filter, func(_ string, m *message) bool {
		if m.expired(now) {
			expired = append(expired, m)
		} else {
			ms = append(ms, m)
		}
		return true
	})
	if len(ms) == 0 {
		return expired
	}
	var subIDs []uint32
	if opts.ID != 0 {
		subIDs = []uint32{opts.ID}
	}
	r := s.routes.Get().(*route)
	defer s.routes.Put(r)
	for _, m := range ms {
		var p packet.Publish
		m.publish(&p)
		src := pubSource{p: &p, topic: m.Topic, origin: m.Origin, expiry: m.Expiry, now: now, msg: m}
		s.deliverLocked(r, se, &src, min(opts.QoS, m.QoS), true, subIDs, "", t)
	}
	return expired
}

// handleUnsubscribe removes subscriptions and answers UNSUBACK (v5: one
// reason per filter).
func (c *conn) handleUnsubscribe(p *packet.Unsubscribe) {
	s, se := c.s, c.sess
	var reasons []packet.ReasonCode
	if c.version == packet.V5 {
		reasons = make([]packet.ReasonCode, len(p.Filters))
	}
	t := s.begin()
	se.mu.Lock()
	for i, f := range p.Filters {
		filter := stringOf(f)
		_, existed := se.subs[filter]
		if existed {
			delete(se.subs, filter)
			s.subs.Unsubscribe(se, filter)
		}
		if reasons != nil && !existed {
			reasons[i] = packet.NoSubscriptionExisted
		}
	}
	if se.stored(s) {
		t.add(state.Op{Kind: state.OpPutSession, Session: se.record()})
	}
	se.mu.Unlock()
	t.commit(nil)
	c.send(&packet.Unsuback{PacketID: p.PacketID, Reasons: reasons})
}

// dropExpiredRetained removes retained messages whose expiry passed (found
// on the way, so an expired message costs memory only until someone looks).
func (s *Server) dropExpiredRetained(ms []*message) {
	t := s.begin()
	for _, m := range ms {
		// Only if the slot still holds this message: a newer one may have
		// replaced it meanwhile.
		if _, ok := s.deleteRetained(m.Topic, m); ok {
			s.stats.expired.Add(1)
			if !m.internal {
				t.add(state.Op{Kind: state.OpClearRetained, Topic: m.Topic})
			}
		}
	}
	t.commit(nil)
}
