package broker

import (
	"time"

	"gatewayd/broker/state"
)

// restore rebuilds sessions, subscriptions, queues, retained messages and
// pending wills from the store's snapshot. It runs in Start before any
// listener accepts.
func (s *Server) restore(snap *state.Snapshot) error {
	if snap == nil {
		return nil
	}
	s.nextMsg.Store(max(snap.NextID, 1))
	now := time.Now()
	msgs := make(map[uint64]*message, len(snap.Messages))
	for id, sm := range snap.Messages {
		if sm == nil {
			continue
		}
		m := &message{Message: *sm}
		m.ID = id
		m.build()
		msgs[id] = m
		if id >= s.nextMsg.Load() {
			s.nextMsg.Store(id + 1)
		}
	}
	t := s.begin()
	for topic, id := range snap.Retained {
		m := msgs[id]
		switch {
		case m == nil:
			t.add(state.Op{Kind: state.OpClearRetained, Topic: topic})
		case m.expired(now):
			t.add(state.Op{Kind: state.OpClearRetained, Topic: topic})
		default:
			s.setRetained(m, false)
		}
	}

	s.mu.Lock()
	var wills []*message
	for i := range snap.Sessions {
		ss := &snap.Sessions[i]
		if ss.ExpiryInterval == 0 {
			// A session that should have ended with its connection.
			t.add(state.Op{Kind: state.OpDeleteSession, ClientID: ss.ClientID})
			continue
		}
		se := s.newSessionLocked(ss.ClientID)
		se.mu.Lock()
		se.version = 0
		se.expiry = ss.ExpiryInterval
		se.disconnectedAt = ss.DisconnectedAt
		if se.disconnectedAt.IsZero() {
			// It was connected when the process stopped.
			se.disconnectedAt = now
		}
		for _, sub := range ss.Subscriptions {
			se.subs[sub.Filter] = sub
			s.subs.Subscribe(se, sub.Filter, sub)
		}
		for _, o := range snap.Queues[ss.ClientID] {
			m := msgs[o.MessageID]
			if m == nil {
				t.add(state.Op{Kind: state.OpDequeue, ClientID: se.id, Seq: o.Seq})
				continue
			}
			ob := &outbound{seq: o.Seq, msg: m, qos: o.QoS, retain: o.RetainFlag, subIDs: o.SubIDs, phase: o.Phase, pid: o.PacketID}
			se.nextSeq = max(se.nextSeq, o.Seq)
			se.queuedBytes += m.size
			s.stats.queued.Add(1)
			if o.Phase == state.Queued || o.PacketID == 0 {
				ob.phase = state.Queued
				se.pending = append(se.pending, ob)
				continue
			}
			if se.inflight == nil {
				se.inflight = make(map[uint16]*outbound)
			}
			se.inflight[o.PacketID] = ob
		}
		for _, id := range snap.Inbound[ss.ClientID] {
			if se.inbound == nil {
				se.inbound = make(map[uint16]bool)
			}
			se.inbound[id] = true
		}
		s.stats.disconnected.Add(1)
		if se.expiry != neverExpires {
			left := se.disconnectedAt.Add(time.Duration(se.expiry) * time.Second).Sub(now)
			s.scheduleExpiryLocked(se, max(left, 0))
		}
		se.mu.Unlock()
	}
	for _, w := range snap.Wills {
		m := &message{Message: w.Message}
		m.build()
		se := s.sessions[w.ClientID]
		if se == nil || !w.Due.After(now) {
			wills = append(wills, m)
			t.add(state.Op{Kind: state.OpDeleteWill, ClientID: w.ClientID})
			continue
		}
		se.mu.Lock()
		se.will = &pendingWill{msg: m, due: w.Due}
		s.scheduleWillLocked(se)
		se.mu.Unlock()
	}
	s.mu.Unlock()
	// Routed in the batch that deletes them: stored together or not at
	// all.
	for _, m := range wills {
		s.publishWill(m, &t)
	}
	t.commit(nil)
	return nil
}
