package broker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"slices"
	"strings"
	"time"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
)

// handle dispatches one decoded packet; false ends the connection.
func (c *conn) handle(p packet.Packet) bool {
	if !c.connected {
		cp, ok := p.(*packet.Connect)
		if !ok {
			c.s.log.Info("broker: first packet is not CONNECT", "remote", c.remote(), "packet", p.Type())
			c.closeNow()
			return false
		}
		return c.handleConnect(cp)
	}
	switch p := p.(type) {
	case *packet.Publish:
		return c.handlePublish(p)
	case *packet.Ack:
		if p.Kind == packet.PUBREL {
			c.released(p)
		} else {
			c.acked(p)
		}
		return true
	case *packet.Subscribe:
		return c.handleSubscribe(p)
	case *packet.Unsubscribe:
		c.handleUnsubscribe(p)
		return true
	case *packet.Pingreq:
		c.send(&packet.Pingresp{})
		return true
	case *packet.Disconnect:
		return c.handleDisconnect(p)
	case *packet.Connect:
		c.s.stats.protocolErrors.Add(1)
		c.s.log.Info("broker: second CONNECT", "client", c.clientID(), "remote", c.remote())
		c.disconnect(packet.ProtocolError, "second CONNECT")
		return false
	default:
		// AUTH (no enhanced authentication method is offered) and packets
		// only a server sends.
		c.s.stats.protocolErrors.Add(1)
		c.s.log.Info("broker: unexpected packet", "client", c.clientID(), "remote", c.remote(), "packet", p.Type())
		c.disconnect(packet.ProtocolError, p.Type().String()+" is not expected from a client")
		return false
	}
}

// handleConnect authenticates the client, attaches it to its session (taking
// over an existing connection) and answers with CONNACK followed by whatever
// the session has to redeliver.
func (c *conn) handleConnect(p *packet.Connect) bool {
	s := c.s
	v := p.Version
	v5 := v == packet.V5
	c.problemInfo = !v5 || !p.Props.Has(packet.PropRequestProblemInfo) || p.Props.RequestProblemInfo != 0

	id := string(p.ClientID)
	assigned := false
	if id == "" {
		// The codec refuses an empty id where the protocol version requires
		// one (3.1, or 3.1.1 without clean session).
		id = "auto-" + randomHex(12)
		assigned = true
	}
	ci := &ConnectInfo{
		ClientID:    id,
		Username:    string(p.Username),
		PasswordSet: p.PasswordFlag,
		Remote:      c.nc.RemoteAddr(),
		Listener:    c.l.name,
		Version:     v,
	}
	if p.PasswordFlag {
		ci.Password = append([]byte{}, p.Password...)
	}
	if tc, ok := c.nc.(*tls.Conn); ok {
		st := tc.ConnectionState()
		ci.TLS = &st
	} else if c.tlsState != nil {
		ci.TLS = c.tlsState
	}
	c.ci = ci

	if c.overLimit {
		s.stats.overLimit.Add(1)
		return c.refuseConnect(v, packet.QuotaExceeded, "too many connections")
	}

	if v5 && p.Props.AuthMethod != nil {
		return c.refuseConnect(v, packet.BadAuthenticationMethod, "enhanced authentication is not supported")
	}
	if s.opts.Auth != nil {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
		reason := s.opts.Auth.Authenticate(ctx, ci)
		cancel()
		ci.Password = nil
		if reason != packet.Success {
			return c.refuseConnect(v, reason, "not authorised")
		}
	} else {
		reason := s.authenticate(c, ci)
		// The password is not needed any more: do not keep it in memory
		// for the life of the connection.
		ci.Password = nil
		if reason != packet.Success {
			why := "not authorised"
			if reason == packet.BadUserNameOrPassword {
				why = "bad user name or password"
			}
			return c.refuseConnect(v, reason, why)
		}
	}

	var will *pendingWill
	if p.WillFlag {
		wt := string(p.WillTopic)
		if wt[0] == '$' || s.authz != nil && !s.authz.CanPublish(ci, wt) {
			return c.refuseConnect(v, packet.NotAuthorized, "not authorised to publish the will to "+wt)
		}
		if p.WillQoS > s.cfg.MaximumQoS {
			return c.refuseConnect(v, packet.QoSNotSupported, "will QoS above the maximum")
		}
		if p.WillRetain && !s.cfg.RetainAvailable {
			return c.refuseConnect(v, packet.RetainNotSupported, "retained messages are disabled")
		}
		wp := packet.Publish{QoS: p.WillQoS, Retain: p.WillRetain, Topic: p.WillTopic, Payload: p.WillPayload, Props: p.WillProps}
		now := time.Now()
		var expiry time.Time
		if p.WillProps.Has(packet.PropMessageExpiry) {
			// Counted from when the will is published; fixed up then.
			expiry = now.Add(time.Duration(p.WillProps.MessageExpiry) * time.Second)
		}
		will = &pendingWill{msg: newMessage(0, &wp, wt, id, expiry, now)}
		if p.WillProps.Has(packet.PropWillDelay) {
			will.delay = p.WillProps.WillDelay
		}
	}

	// Session expiry: 3.1/3.1.1 persistent sessions get MaxSessionExpiry; v5
	// asks and is capped by it.
	maxExpiry := c.maxSessionExpiry(id)
	var expiry uint32
	switch {
	case v5:
		expiry = min(p.Props.SessionExpiry, maxExpiry)
	case !p.CleanStart:
		expiry = maxExpiry
	}

	keepAlive := p.KeepAlive
	serverKA := false
	if s.cfg.MaxKeepAlive > 0 && (keepAlive == 0 || keepAlive > s.cfg.MaxKeepAlive) {
		keepAlive, serverKA = s.cfg.MaxKeepAlive, true
	}
	c.keepAlive = time.Duration(keepAlive) * time.Second

	ack := packet.Connack{}
	if v5 {
		pr := &ack.Props
		pr.ReceiveMaximum = s.cfg.ReceiveMaximum
		pr.Set(packet.PropReceiveMaximum)
		if s.cfg.MaximumQoS < 2 {
			pr.MaximumQoS = s.cfg.MaximumQoS
			pr.Set(packet.PropMaximumQoS)
		}
		if !s.cfg.RetainAvailable {
			pr.RetainAvailable = 0
			pr.Set(packet.PropRetainAvailable)
		}
		pr.MaximumPacketSize = s.cfg.MaxPacketSize
		pr.Set(packet.PropMaximumPacketSize)
		pr.TopicAliasMaximum = s.cfg.TopicAliasMaximum
		pr.Set(packet.PropTopicAliasMaximum)
		pr.WildcardSubAvailable, pr.SubscriptionIDAvailable, pr.SharedSubAvailable = 1, 1, 1
		pr.Set(packet.PropWildcardSubAvailable)
		pr.Set(packet.PropSubscriptionIDAvailable)
		pr.Set(packet.PropSharedSubAvailable)
		if serverKA {
			pr.ServerKeepAlive = keepAlive
			pr.Set(packet.PropServerKeepAlive)
		}
		if assigned {
			pr.AssignedClientID = []byte(id)
		}
		if expiry != p.Props.SessionExpiry {
			pr.SessionExpiry = expiry
			pr.Set(packet.PropSessionExpiry)
		}
		if p.Props.Has(packet.PropRequestResponseInfo) && p.Props.RequestResponseInfo == 1 {
			pr.ResponseInfo = []byte("gatewayd/response/" + id + "/")
		}
	}

	// The client's limits on what the broker sends.
	window := int(s.cfg.MaxInflight)
	maxOut, aliasMax := 0, uint16(0)
	if v5 {
		if p.Props.Has(packet.PropReceiveMaximum) {
			window = min(window, int(p.Props.ReceiveMaximum))
		}
		if p.Props.Has(packet.PropMaximumPacketSize) {
			maxOut = int(p.Props.MaximumPacketSize)
		}
		aliasMax = p.Props.TopicAliasMaximum
	}

	var publishNow []*message
	t := s.begin()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		t.commit(nil)
		return c.refuseConnect(v, packet.ServerShuttingDown, "server shutting down")
	}
	se := s.sessions[id]
	if se != nil {
		se.mu.Lock()
		if se.conn == nil {
			s.stats.disconnected.Add(-1) // resumed or replaced: no longer offline
		}
		// A session with expiry 0 ended with its connection, even if that
		// connection's teardown has not run yet.
		ends := p.CleanStart || se.expiry == 0
		if old := se.conn; old != nil {
			// Takeover: the older connection goes, and its will goes out
			// unless this connection resumes the session within the delay.
			s.log.Info("broker: session taken over", "client", id, "old_remote", old.remote(), "remote", c.remote())
			se.conn = nil
			se.online.Store(false)
			if se.waiters > 0 {
				se.wakeLocked() // publishers waiting for the old client's queue
			}
			s.stats.connected.Add(-1)
			s.stats.disconnects.Add(1)
			old.disconnect(packet.SessionTakenOver, "another connection uses this client id")
			if w := old.will.Swap(nil); w != nil && (ends || w.delay == 0) {
				publishNow = append(publishNow, w.msg)
			}
		}
		if se.will != nil {
			// A delayed will of the previous connection: a resumed session
			// cancels it, a new session means the old one ended.
			if ends {
				publishNow = append(publishNow, se.will.msg)
			}
			se.will = nil
			if se.willTimer != nil {
				se.willTimer.Stop()
				se.willTimer = nil
			}
			if s.durable {
				t.add(state.Op{Kind: state.OpDeleteWill, ClientID: id})
			}
		}
		if ends {
			s.dropSessionLocked(se, &t)
			se.mu.Unlock()
			se = nil
		}
	}
	present := se != nil
	if se == nil {
		se = s.newSessionLocked(id)
		se.mu.Lock()
	}
	if se.expiryTimer != nil {
		se.expiryTimer.Stop()
		se.expiryTimer = nil
	}
	wasStored := se.stored(s)
	se.gen++
	se.version, se.ci, se.expiry = v, ci, expiry
	se.disconnectedAt = time.Time{}
	se.window = window
	if se.stored(s) {
		t.add(state.Op{Kind: state.OpPutSession, Session: se.record()})
	} else if wasStored {
		t.add(state.Op{Kind: state.OpDeleteSession, ClientID: id})
	}
	ack.SessionPresent = present

	// CONNACK goes into the output before the connection is attached, so
	// nothing a publisher delivers can overtake it; it is written once the
	// client counts as connected, so that a client holding its CONNACK
	// finds itself in Stats.
	c.outMu.Lock()
	c.version, c.maxOut, c.aliasMax = v, maxOut, aliasMax
	c.appendLocked(&ack, v)
	c.outMu.Unlock()
	c.connected, c.sess = true, se
	c.will.Store(will)
	c.decVersion = v
	se.conn = c
	se.online.Store(true)
	n := s.stats.connected.Add(1)
	s.stats.connects.Add(1)
	s.stats.noteMaxConnected(n)
	c.outMu.Lock()
	c.kickLocked()
	c.outMu.Unlock()
	s.resumeLocked(se, &t)
	se.mu.Unlock()
	s.mu.Unlock()
	// The wills go out in the batch that deletes them: stored together or
	// not at all.
	for _, m := range publishNow {
		s.publishWill(m, &t)
	}
	t.commit(nil)
	s.log.Debug("broker: client connected", "client", id, "remote", c.remote(), "version", int(v),
		"clean", p.CleanStart, "session_present", present, "keepalive", keepAlive)
	return true
}

// refuseConnect answers CONNECT with a refusal and ends the connection.
func (c *conn) refuseConnect(v packet.Version, reason packet.ReasonCode, why string) bool {
	c.s.stats.refused.Add(1)
	c.s.log.Info("broker: connection refused", "client", c.clientID(), "remote", c.remote(), "reason", reason, "why", why)
	if v != packet.V5 {
		reason = packet.ConnackCodeV3(reason)
	}
	c.refuse(v, reason, why)
	return false
}

// maxSessionExpiry is the cap on the session expiry of c's client id:
// max_session_expiry, except for an in-process client (served by ServeConn
// under a name no listener has) whose ClientPolicy says KeepSession.
func (c *conn) maxSessionExpiry(id string) uint32 {
	if !c.l.network {
		if p := c.s.policyFor(id); p != nil && p.KeepSession {
			return neverExpires
		}
	}
	return uint32(min(c.s.cfg.MaxSessionExpiry/time.Second, neverExpires))
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// handleDisconnect handles the client's DISCONNECT: normally the will is
// discarded; v5 0x04 asks for it to be published, and the session expiry may
// change (but not from 0, which would revive a session the broker already
// planned to drop).
func (c *conn) handleDisconnect(p *packet.Disconnect) bool {
	s, se := c.s, c.sess
	if c.version == packet.V5 && p.Props.Has(packet.PropSessionExpiry) {
		se.mu.Lock()
		cur := se.expiry
		se.mu.Unlock()
		if cur == 0 && p.Props.SessionExpiry != 0 {
			s.stats.protocolErrors.Add(1)
			c.disconnect(packet.ProtocolError, "session expiry interval changed from 0 in DISCONNECT")
			return false
		}
		t := s.begin()
		se.mu.Lock()
		wasStored := se.stored(s)
		se.expiry = min(p.Props.SessionExpiry, c.maxSessionExpiry(se.id))
		if se.stored(s) {
			t.add(state.Op{Kind: state.OpPutSession, Session: se.record()})
		} else if wasStored {
			t.add(state.Op{Kind: state.OpDeleteSession, ClientID: se.id})
		}
		se.mu.Unlock()
		t.commit(nil)
	}
	c.normal = true
	c.sendWill = c.version == packet.V5 && p.Reason == packet.DisconnectWithWill
	if !c.sendWill {
		// Discarded now, not when the connection is torn down: a takeover
		// racing with the teardown must not publish it either.
		c.will.Store(nil)
	}
	return false
}

// connClosed detaches a finished connection from its session: the session
// ends now (expiry 0) or waits for its expiry; the will is published now or
// after its delay; shared-subscription messages it had not received go to
// another member of the group.
func (s *Server) connClosed(c *conn) {
	t := s.begin()
	s.mu.Lock()
	delete(s.conns, c)
	closing := s.closing
	se := c.sess
	var publishNow []*message
	var handoff []*outbound
	if se != nil {
		se.mu.Lock()
		if se.conn == c {
			se.conn = nil
			se.online.Store(false)
			if se.waiters > 0 {
				se.wakeLocked() // publishers waiting for this client's queue stop waiting
			}
			se.gen++
			s.stats.connected.Add(-1)
			s.stats.disconnects.Add(1)
			w := c.will.Swap(nil)
			if c.normal && !c.sendWill {
				w = nil
			}
			handoff = s.takeSharedLocked(se, &t)
			if se.expiry == 0 {
				s.dropSessionLocked(se, &t)
				if w != nil {
					publishNow = append(publishNow, w.msg)
				}
			} else {
				s.stats.disconnected.Add(1)
				se.disconnectedAt = time.Now()
				if se.stored(s) {
					t.add(state.Op{Kind: state.OpPutSession, Session: se.record()})
				}
				if w != nil {
					delay := min(w.delay, se.expiry)
					switch {
					case delay == 0, closing && !se.stored(s):
						publishNow = append(publishNow, w.msg)
					default:
						w.due = time.Now().Add(time.Duration(delay) * time.Second)
						se.will = w
						if se.stored(s) {
							t.add(state.Op{Kind: state.OpPutWill, Will: &state.Will{ClientID: se.id, Message: w.msg.Message, Due: w.due}})
						}
						if !closing {
							s.scheduleWillLocked(se)
						}
					}
				}
				if se.expiry != neverExpires && !closing {
					s.scheduleExpiryLocked(se, time.Duration(se.expiry)*time.Second)
				}
			}
		}
		se.mu.Unlock()
	}
	s.mu.Unlock()
	for _, m := range publishNow {
		s.publishWill(m, &t)
	}
	t.commit(nil)
	if len(handoff) > 0 {
		s.handOff(se, handoff)
	}
	if se != nil {
		s.log.Debug("broker: client disconnected", "client", se.id, "remote", c.remote(), "normal", c.normal)
	}
}

// publishWill publishes a will now. Its Message Expiry Interval counts from
// publication, not from CONNECT. What it stores goes in t.
func (s *Server) publishWill(m *message, t *tx) {
	w := *m
	now := time.Now()
	if !m.Expiry.IsZero() {
		w.Expiry = now.Add(m.Expiry.Sub(m.Created))
	}
	w.ID = s.nextMsg.Add(1) - 1
	w.Created = now
	w.build()
	s.stats.willsSent.Add(1)
	s.routeMessage(&w, t)
}

// dropSessionLocked ends a session: its subscriptions leave the index and its
// queue is forgotten. The caller holds s.mu and se.mu.
func (s *Server) dropSessionLocked(se *session, t *tx) {
	if se.stored(s) {
		t.add(state.Op{Kind: state.OpDeleteSession, ClientID: se.id})
	}
	for f := range se.subs {
		s.subs.Unsubscribe(se, f)
	}
	s.stats.queued.Add(-int64(se.queueLen()))
	se.subs = map[string]state.Subscription{}
	se.pending, se.pendHead, se.inflight, se.inbound, se.queuedBytes = nil, 0, nil, nil, 0
	se.dead = true
	se.gen++
	if se.expiryTimer != nil {
		se.expiryTimer.Stop()
		se.expiryTimer = nil
	}
	if se.willTimer != nil {
		se.willTimer.Stop()
		se.willTimer = nil
	}
	if s.sessions[se.id] == se {
		delete(s.sessions, se.id)
	}
}

// scheduleExpiryLocked arranges for an offline session to end after d.
func (s *Server) scheduleExpiryLocked(se *session, d time.Duration) {
	gen := se.gen
	se.expiryTimer = time.AfterFunc(d, func() { s.sessionExpired(se, gen) })
}

func (s *Server) scheduleWillLocked(se *session) {
	gen := se.gen
	se.willTimer = time.AfterFunc(time.Until(se.will.due), func() { s.willDue(se, gen) })
}

// timerStart registers a firing timer (or a WebSocket upgrade) with the wait
// group unless the server is shutting down (Shutdown waits for the ones that
// got in).
func (s *Server) timerStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) sessionExpired(se *session, gen uint64) {
	if !s.timerStart() {
		return
	}
	defer s.wg.Done()
	s.endSession(se, func() bool { return se.gen == gen }, true)
}

// EndSession ends clientID's session as its expiry would (a pending will is
// published), if the client is not connected, and reports whether it did.
// It is for an in-process client's session that is no longer wanted (an
// upstream bridge removed from the configuration).
func (s *Server) EndSession(clientID string) bool {
	s.mu.Lock()
	se := s.sessions[clientID]
	s.mu.Unlock()
	return se != nil && s.endSession(se, func() bool { return true }, false)
}

// SessionIDs returns the client ids of the sessions whose id starts with
// prefix, connected or not.
func (s *Server) SessionIDs(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id := range s.sessions {
		if strings.HasPrefix(id, prefix) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// endSession ends se if it is offline and still (called with s.mu and se.mu
// held) is true; expired counts it in Stats.ExpiredSessions.
func (s *Server) endSession(se *session, still func() bool, expired bool) bool {
	var will *message
	t := s.begin()
	s.mu.Lock()
	se.mu.Lock()
	ended := false
	if still() && se.conn == nil && !se.dead {
		ended = true
		if se.will != nil {
			// The session ends before the will delay: the will goes now.
			will = se.will.msg
			se.will = nil
			if s.durable {
				t.add(state.Op{Kind: state.OpDeleteWill, ClientID: se.id})
			}
		}
		s.dropSessionLocked(se, &t)
		s.stats.disconnected.Add(-1)
		if expired {
			s.stats.expiredSessions.Add(1)
		}
		s.log.Debug("broker: session ended", "client", se.id, "expired", expired)
	}
	se.mu.Unlock()
	s.mu.Unlock()
	if will != nil {
		s.publishWill(will, &t)
	}
	t.commit(nil)
	return ended
}

func (s *Server) willDue(se *session, gen uint64) {
	if !s.timerStart() {
		return
	}
	defer s.wg.Done()
	var will *message
	t := s.begin()
	se.mu.Lock()
	if se.gen == gen && se.conn == nil && se.will != nil {
		will = se.will.msg
		se.will = nil
		se.willTimer = nil
		if s.durable {
			t.add(state.Op{Kind: state.OpDeleteWill, ClientID: se.id})
		}
	}
	se.mu.Unlock()
	if will != nil {
		s.publishWill(will, &t)
	}
	t.commit(nil)
}

// stopTimers stops every session timer; Shutdown calls it once no connection
// is left.
func (s *Server) stopTimers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, se := range s.sessions {
		se.mu.Lock()
		if se.expiryTimer != nil {
			se.expiryTimer.Stop()
		}
		if se.willTimer != nil {
			se.willTimer.Stop()
		}
		se.mu.Unlock()
	}
	s.stopSys()
}

// handOff gives deliveries from shared subscriptions of a session that went
// offline to another connected member of the same group; with none, they stay
// with the session (if it persists).
func (s *Server) handOff(from *session, obs []*outbound) {
	for _, ob := range obs {
		var target *session
		var opts state.Subscription
		s.subs.Match(ob.msg.Topic, nil, func(_, _ string, members []hit) {
			if target != nil {
				return
			}
			for _, h := range members {
				// A member granted QoS 0 cannot take a queued delivery.
				if h.Filter == ob.shared && h.Key != from && h.Key.online.Load() && h.Value.QoS > 0 {
					target, opts = h.Key, h.Value
					return
				}
			}
		})
		nob := &outbound{msg: ob.msg, qos: ob.qos, retain: ob.retain, subIDs: ob.subIDs, shared: ob.shared}
		if target != nil {
			nob.qos = min(ob.msg.QoS, opts.QoS)
			if opts.ID != 0 {
				nob.subIDs = []uint32{opts.ID}
			} else {
				nob.subIDs = nil
			}
		} else {
			target = from
		}
		t := s.begin()
		target.mu.Lock()
		if !target.dead && (target.conn != nil || target.expiry != 0) {
			s.enqueueLocked(target, nob, &t)
		}
		target.mu.Unlock()
		t.commit(nil)
	}
}
