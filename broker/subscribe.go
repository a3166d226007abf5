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
	var wantRetained []state.Subscription
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
		opts := state.Subscription{
			Filter:            filter,
			QoS:               min(sub.QoS, s.cfg.MaximumQoS),
			NoLocal:           sub.NoLocal,
			RetainAsPublished: sub.RetainAsPublished,
			RetainHandling:    sub.RetainHandling,
			ID:                subID,
		}
		se.mu.Lock()
		_, existed := se.subs[filter]
		if !existed && s.cfg.MaxSubscriptionsPerClient > 0 && len(se.subs) >= s.cfg.MaxSubscriptionsPerClient {
			se.mu.Unlock()
			s.stats.subsRefused.Add(1)
			s.log.Info("broker: subscription refused: max_subscriptions_per_client reached", "client", c.ci.ClientID,
				"remote", c.remote(), "filter", filter, "max", s.cfg.MaxSubscriptionsPerClient)
			reasons[i] = fail(packet.QuotaExceeded)
			continue
		}
		se.subs[filter] = opts
		s.subs.Subscribe(se, filter, opts)
		se.mu.Unlock()
		reasons[i] = packet.ReasonCode(opts.QoS)
		// No retained messages for shared subscriptions [MQTT-4.8.2-...]; retain
		// handling 1 sends them only for a new subscription, 2 never.
		if !shared && s.cfg.RetainAvailable && (opts.RetainHandling == 0 || opts.RetainHandling == 1 && !existed) {
			wantRetained = append(wantRetained, opts)
		}
	}
	se.mu.Lock()
	if se.stored(s) {
		t.add(state.Op{Kind: state.OpPutSession, Session: se.record()})
	}
	se.mu.Unlock()
	t.commit(nil)
	c.send(&packet.Suback{PacketID: p.PacketID, Reasons: reasons})
	for _, opts := range wantRetained {
		s.sendRetained(se, opts)
	}
	return true
}

// sendRetained delivers the retained messages matching a new subscription,
// with the retain flag set.
func (s *Server) sendRetained(se *session, opts state.Subscription) {
	var ms, expired []*message
	now := time.Now()
	s.retained.Match(opts.Filter, func(_ string, m *message) bool {
		if m.expired(now) {
			expired = append(expired, m)
		} else {
			ms = append(ms, m)
		}
		return true
	})
	if len(expired) > 0 {
		s.dropExpiredRetained(expired)
	}
	if len(ms) == 0 {
		return
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
		t := s.begin()
		s.deliver(r, se, &src, min(opts.QoS, m.QoS), true, subIDs, "", &t)
		t.commit(nil)
	}
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
