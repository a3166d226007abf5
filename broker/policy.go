package broker

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/broker/state"
)

// ClientPolicy overrides, for one client identifier's session, how the
// broker bounds the queue of QoS 1/2 messages waiting for that client. The
// upstream bridge sets one on its local session: that queue is the bridge's
// store-and-forward buffer while the uplink is down.
//
// The zero value of each field keeps the server's behaviour.
type ClientPolicy struct {
	// MaxQueuedMessages and MaxQueuedBytes bound the session's queue (queued
	// and in flight). Zero: the server's max_queued_messages and
	// max_queued_bytes. Negative: no bound of that kind.
	MaxQueuedMessages int
	MaxQueuedBytes    int
	// MaxAge drops queued messages older than this (counted as expired)
	// instead of delivering them. Zero: no age limit.
	MaxAge time.Duration
	// DropOldest makes room for a new message in a full queue by dropping
	// the oldest messages not yet sent. False: the new message is rejected.
	DropOldest bool
	// UpgradeQoS queues QoS 0 messages matching the client's subscriptions
	// as QoS 1 (durably, with a persistent session and a durable store),
	// so that they wait for the client like QoS 1 messages do.
	UpgradeQoS bool
	// KeepSession exempts the session from max_session_expiry when its
	// client is in-process (served by ServeConn under a name no listener
	// has): it is kept as long as the client asks. A client of the same
	// identifier connecting through a listener stays capped.
	KeepSession bool
}

// ClientQueueStats describe one client's queue and what its policy dropped.
type ClientQueueStats struct {
	Messages int       // queued or in flight
	Bytes    int       // their size as counted against MaxQueuedBytes
	Oldest   time.Time // when the oldest of them was published; zero if none
	// Counted since the policy was set (per server process).
	DroppedOldest uint64 // dropped to make room (DropOldest)
	RejectedFull  uint64 // new messages refused by a full queue
	Expired       uint64 // dropped for being older than MaxAge
}

// clientPolicy is a ClientPolicy with its counters; sessions point to it.
type clientPolicy struct {
	ClientPolicy
	droppedOldest atomic.Uint64
	rejectedFull  atomic.Uint64
	expired       atomic.Uint64
}

// policyTable holds a server's policies. It lives outside Server (keyed by
// it) so that servers without policies pay nothing.
type policyTable struct {
	mu       sync.Mutex
	byClient map[string]*clientPolicy
	upgrade  int // policies with UpgradeQoS
}

var (
	policyTables sync.Map     // *Server -> *policyTable
	upgrading    atomic.Int32 // policies with UpgradeQoS, in any server
)

func (s *Server) policies(create bool) *policyTable {
	if v, ok := policyTables.Load(s); ok {
		return v.(*policyTable)
	}
	if !create {
		return nil
	}
	v, _ := policyTables.LoadOrStore(s, &policyTable{byClient: make(map[string]*clientPolicy)})
	return v.(*policyTable)
}

// SetClientPolicy sets the queue policy of clientID's session, now and for
// any session with that identifier created later (including one restored from
// the store). It may be called before or after Start.
func (s *Server) SetClientPolicy(clientID string, p ClientPolicy) {
	pt := s.policies(true)
	cp := &clientPolicy{ClientPolicy: p}
	pt.mu.Lock()
	if old := pt.byClient[clientID]; old != nil {
		cp.droppedOldest.Store(old.droppedOldest.Load())
		cp.rejectedFull.Store(old.rejectedFull.Load())
		cp.expired.Store(old.expired.Load())
		if old.UpgradeQoS {
			pt.upgrade--
			upgrading.Add(-1)
		}
	}
	if p.UpgradeQoS {
		pt.upgrade++
		upgrading.Add(1)
	}
	pt.byClient[clientID] = cp
	pt.mu.Unlock()

	s.mu.Lock()
	se := s.sessions[clientID]
	s.mu.Unlock()
	if se != nil {
		se.mu.Lock()
		se.policy = cp
		se.mu.Unlock()
	}
}

// ClientQueue reports clientID's queue and its policy's counters; ok is false
// when the broker has neither a session nor a policy for it.
func (s *Server) ClientQueue(clientID string) (st ClientQueueStats, ok bool) {
	if pt := s.policies(false); pt != nil {
		pt.mu.Lock()
		cp := pt.byClient[clientID]
		pt.mu.Unlock()
		if cp != nil {
			ok = true
			st.DroppedOldest = cp.droppedOldest.Load()
			st.RejectedFull = cp.rejectedFull.Load()
			st.Expired = cp.expired.Load()
		}
	}
	s.mu.Lock()
	se := s.sessions[clientID]
	s.mu.Unlock()
	if se == nil {
		return st, ok
	}
	se.mu.Lock()
	defer se.mu.Unlock()
	st.Messages, st.Bytes = se.queueLen(), se.queuedBytes
	for _, ob := range se.inflight {
		if st.Oldest.IsZero() || ob.msg.Created.Before(st.Oldest) {
			st.Oldest = ob.msg.Created
		}
	}
	if se.pendHead < len(se.pending) {
		if c := se.pending[se.pendHead].msg.Created; st.Oldest.IsZero() || c.Before(st.Oldest) {
			st.Oldest = c
		}
	}
	return st, true
}

// PublishSys publishes a retained value under $SYS/ as the broker does its
// own statistics: never stored, rebuilt by whoever owns it after a restart.
// In-process components (the bridge) report their state with it; clients
// cannot publish to $ topics.
func (s *Server) PublishSys(topic, value string) bool {
	if !strings.HasPrefix(topic, "$SYS/") {
		return false
	}
	s.publishSys(topic, value)
	return true
}

// policyFor returns the policy for a new session (s.mu held).
func (s *Server) policyFor(clientID string) *clientPolicy {
	pt := s.policies(false)
	if pt == nil {
		return nil
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.byClient[clientID]
}

// upgradesQoS0 reports whether a QoS 0 PUBLISH may be queued at QoS 1 for
// some session, so that its routing must be written to the store.
func (s *Server) upgradesQoS0() bool {
	if upgrading.Load() == 0 {
		return false
	}
	pt := s.policies(false)
	if pt == nil {
		return false
	}
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.upgrade > 0
}

// bound returns the limit in force: the policy's, else the server's; 0 means
// none.
func bound(policy, server int) int {
	switch {
	case policy < 0:
		return 0
	case policy > 0:
		return policy
	}
	return server
}

// admitPolicyLocked applies se.policy to a new delivery: drops messages past
// MaxAge, then makes room (DropOldest) or refuses ob. It reports whether ob
// may be queued.
func (s *Server) admitPolicyLocked(se *session, ob *outbound, t *tx) bool {
	cp := se.policy
	now := time.Now()
	if cp.MaxAge > 0 {
		for se.pendHead < len(se.pending) && cp.tooOld(se.pending[se.pendHead], now) {
			s.dropHeadLocked(se, t)
			cp.expired.Add(1)
			s.stats.expired.Add(1)
		}
	}
	maxMsgs := bound(cp.MaxQueuedMessages, s.cfg.MaxQueuedMessages)
	maxBytes := bound(cp.MaxQueuedBytes, s.cfg.MaxQueuedBytes)
	full := func() bool {
		return maxMsgs > 0 && se.queueLen() >= maxMsgs ||
			maxBytes > 0 && se.queuedBytes+ob.msg.size > maxBytes
	}
	for full() {
		if !cp.DropOldest || se.pendHead == len(se.pending) {
			// Nothing left that may be dropped (only messages in flight).
			cp.rejectedFull.Add(1)
			s.stats.dropped.Add(1)
			s.stats.queueDrops.Add(1)
			return false
		}
		s.dropHeadLocked(se, t)
		cp.droppedOldest.Add(1)
		s.stats.queueDrops.Add(1)
	}
	return true
}

// dropHeadLocked drops the oldest message not yet sent.
func (s *Server) dropHeadLocked(se *session, t *tx) {
	ob := se.pending[se.pendHead]
	se.pending[se.pendHead] = nil
	se.pendHead++
	if se.pendHead > 64 && se.pendHead*2 > len(se.pending) {
		n := copy(se.pending, se.pending[se.pendHead:])
		clear(se.pending[n:])
		se.pending = se.pending[:n]
		se.pendHead = 0
	}
	s.stats.dropped.Add(1)
	s.removeLocked(se, ob, t)
}

func (cp *clientPolicy) tooOld(ob *outbound, now time.Time) bool {
	return cp != nil && cp.MaxAge > 0 && !ob.msg.Created.IsZero() && now.Sub(ob.msg.Created) > cp.MaxAge
}

// ClientSubscriptions returns the topic filters of clientID's session, for
// an in-process client that must drop the ones its configuration no longer
// has (the upstream bridge after a configuration change).
func (s *Server) ClientSubscriptions(clientID string) []string {
	s.mu.Lock()
	se := s.sessions[clientID]
	s.mu.Unlock()
	if se == nil {
		return nil
	}
	se.mu.Lock()
	defer se.mu.Unlock()
	out := make([]string, 0, len(se.subs))
	for f := range se.subs {
		out = append(out, f)
	}
	return out
}

// ReleaseInbound forgets the QoS 2 packet ids that clientID's session holds
// awaiting PUBREL, and returns how many there were. It is for an in-process
// client that starts afresh on a persistent session (the upstream bridge
// after a restart): it has no memory of those ids, and would otherwise reuse
// one for a new QoS 2 message, which the broker must then take for a
// duplicate and drop. The messages of those ids were routed already. Call
// it while the client is not connected; a connected session is left alone
// and 0 returned.
func (s *Server) ReleaseInbound(clientID string) int {
	t := s.begin()
	s.mu.Lock()
	se := s.sessions[clientID]
	s.mu.Unlock()
	n := 0
	if se != nil {
		se.mu.Lock()
		if se.conn == nil && !se.dead {
			for id := range se.inbound {
				if se.stored(s) {
					t.add(state.Op{Kind: state.OpDeleteInbound, ClientID: se.id, PacketID: id})
				}
				delete(se.inbound, id)
				n++
			}
		}
		se.mu.Unlock()
	}
	t.commit(nil)
	return n
}
