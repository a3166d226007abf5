package broker

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
)

// testStore is a durable-looking Store that applies batches to an in-memory
// snapshot (so a second server can restart from it) and, when hold is set,
// keeps done callbacks until the test releases them, standing in for a
// store waiting on fsync.
type testStore struct {
	mu      sync.Mutex
	hold    bool
	fail    error // done reports this error
	held    []func(error)
	batches []state.Batch
	snap    state.Snapshot
}

func newTestStore() *testStore {
	return &testStore{snap: state.Snapshot{
		Messages: map[uint64]*state.Message{},
		Retained: map[string]uint64{},
		Queues:   map[string][]state.Outbound{},
		Inbound:  map[string][]uint16{},
		NextID:   1,
	}}
}

func (ts *testStore) Durable() bool { return true }
func (ts *testStore) Close() error  { return nil }

func (ts *testStore) Load() (*state.Snapshot, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	s := ts.snap
	s.Sessions = slices.Clone(s.Sessions)
	s.Messages = map[uint64]*state.Message{}
	for k, v := range ts.snap.Messages {
		m := *v
		s.Messages[k] = &m
	}
	s.Retained = map[string]uint64{}
	for k, v := range ts.snap.Retained {
		s.Retained[k] = v
	}
	s.Queues = map[string][]state.Outbound{}
	for k, v := range ts.snap.Queues {
		s.Queues[k] = slices.Clone(v)
	}
	s.Inbound = map[string][]uint16{}
	for k, v := range ts.snap.Inbound {
		s.Inbound[k] = slices.Clone(v)
	}
	s.Wills = slices.Clone(s.Wills)
	return &s, nil
}

func (ts *testStore) Commit(b *state.Batch, done func(error)) {
	ts.mu.Lock()
	ts.batches = append(ts.batches, state.Batch{Ops: slices.Clone(b.Ops)})
	ts.apply(b)
	if ts.hold {
		ts.held = append(ts.held, done)
		ts.mu.Unlock()
		return
	}
	err := ts.fail
	ts.mu.Unlock()
	done(err)
}

// release completes every held commit with err.
func (ts *testStore) release(err error) {
	ts.mu.Lock()
	held := ts.held
	ts.held, ts.hold = nil, false
	ts.mu.Unlock()
	for _, d := range held {
		d(err)
	}
}

func (ts *testStore) heldCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.held)
}

// ops returns the kinds of every op committed so far.
func (ts *testStore) ops() []state.OpKind {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var k []state.OpKind
	for _, b := range ts.batches {
		for _, op := range b.Ops {
			k = append(k, op.Kind)
		}
	}
	return k
}

func (ts *testStore) apply(b *state.Batch) {
	s := &ts.snap
	for _, op := range b.Ops {
		switch op.Kind {
		case state.OpPutSession:
			s.Sessions = slices.DeleteFunc(s.Sessions, func(x state.Session) bool { return x.ClientID == op.Session.ClientID })
			s.Sessions = append(s.Sessions, *op.Session)
		case state.OpDeleteSession:
			s.Sessions = slices.DeleteFunc(s.Sessions, func(x state.Session) bool { return x.ClientID == op.ClientID })
			delete(s.Queues, op.ClientID)
			delete(s.Inbound, op.ClientID)
		case state.OpPutMessage:
			m := *op.Message
			s.Messages[m.ID] = &m
			s.NextID = max(s.NextID, m.ID+1)
		case state.OpSetRetained:
			s.Retained[op.Topic] = op.MessageID
		case state.OpClearRetained:
			delete(s.Retained, op.Topic)
		case state.OpEnqueue:
			s.Queues[op.ClientID] = append(s.Queues[op.ClientID], *op.Outbound)
		case state.OpUpdateOutbound:
			for i := range s.Queues[op.ClientID] {
				if o := &s.Queues[op.ClientID][i]; o.Seq == op.Outbound.Seq {
					o.Phase, o.PacketID = op.Outbound.Phase, op.Outbound.PacketID
				}
			}
		case state.OpDequeue:
			s.Queues[op.ClientID] = slices.DeleteFunc(s.Queues[op.ClientID], func(o state.Outbound) bool { return o.Seq == op.Seq })
		case state.OpPutInbound:
			s.Inbound[op.ClientID] = append(s.Inbound[op.ClientID], op.PacketID)
		case state.OpDeleteInbound:
			s.Inbound[op.ClientID] = slices.DeleteFunc(s.Inbound[op.ClientID], func(id uint16) bool { return id == op.PacketID })
		case state.OpPutWill:
			s.Wills = slices.DeleteFunc(s.Wills, func(w state.Will) bool { return w.ClientID == op.Will.ClientID })
			s.Wills = append(s.Wills, *op.Will)
		case state.OpDeleteWill:
			s.Wills = slices.DeleteFunc(s.Wills, func(w state.Will) bool { return w.ClientID == op.ClientID })
		}
	}
}

// persistentSubscriber leaves a 3.1.1 persistent session subscribed to
// filter at QoS 1 and offline.
func persistentSubscriber(t *testing.T, addr, id, filter string) {
	t.Helper()
	c := dialRaw(t, addr, packet.V311)
	c.mustConnect(id, false)
	c.subscribe(1, filter, 1)
	c.send(&packet.Disconnect{})
	c.closed()
}

// TestPubackWaitsForCommit: a QoS 1 message routed to a persistent session
// is acknowledged only when the store's done callback runs. The PINGREQ sent
// after it is answered first, which shows the PUBACK was held back.
func TestPubackWaitsForCommit(t *testing.T) {
	ts := newTestStore()
	_, addr := startServer(t, nil, Options{Store: ts})
	persistentSubscriber(t, addr, "durable", "t")

	ts.mu.Lock()
	ts.hold = true
	ts.mu.Unlock()
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	pub.publish("t", 1, false, 9, "keep me")
	pub.send(&packet.Pingreq{})
	if p := pub.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v before the store completed, want PINGRESP", p.Type())
	}
	waitFor(t, "commit held", func() bool { return ts.heldCount() > 0 })
	ts.release(nil)
	if a := pub.nextAck(packet.PUBACK); a.PacketID != 9 {
		t.Fatalf("PUBACK id %d", a.PacketID)
	}
	if !slices.Contains(ts.ops(), state.OpPutMessage) || !slices.Contains(ts.ops(), state.OpEnqueue) {
		t.Fatalf("ops %v: message and queue entry not stored", ts.ops())
	}
}

// TestPubackImmediateWhenNothingDurable: a message no persistent session or
// retained slot needs is not written to the store and is acknowledged at once.
func TestPubackImmediateWhenNothingDurable(t *testing.T) {
	ts := newTestStore()
	_, addr := startServer(t, nil, Options{Store: ts})
	sub := dialRaw(t, addr, packet.V311)
	sub.mustConnect("online", true)
	sub.subscribe(1, "t", 1)
	ts.mu.Lock()
	ts.hold = true
	ts.mu.Unlock()
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	pub.publish("t", 1, false, 3, "transient")
	pub.send(&packet.Pingreq{})
	if p := pub.next(); p.Type() != packet.PUBACK {
		t.Fatalf("got %v, want PUBACK before PINGRESP", p.Type())
	}
	if slices.Contains(ts.ops(), state.OpPutMessage) {
		t.Fatalf("ops %v: a message nobody durable needs was stored", ts.ops())
	}
	sub.nextPublish()
	ts.release(nil)
}

// TestStoreFailureRefusesMessage: when the store reports an error, a v5
// publisher gets PUBACK 0x97 and a 3.1.1 publisher is disconnected.
func TestStoreFailureRefusesMessage(t *testing.T) {
	ts := newTestStore()
	s, addr := startServer(t, nil, Options{Store: ts})
	persistentSubscriber(t, addr, "durable", "t")
	ts.mu.Lock()
	ts.fail = errors.New("disk full")
	ts.mu.Unlock()

	p5 := dialRaw(t, addr, packet.V5)
	p5.mustConnect("p5", true)
	p5.publish("t", 1, false, 1, "x")
	if a := p5.nextAck(packet.PUBACK); a.Reason != packet.QuotaExceeded {
		t.Fatalf("PUBACK reason %#x, want 0x97", a.Reason)
	}
	p3 := dialRaw(t, addr, packet.V311)
	p3.mustConnect("p3", true)
	p3.publish("t", 1, false, 1, "x")
	if seen := p3.closed(); len(seen) != 0 {
		t.Fatalf("3.1.1 publisher got %v, want the connection closed", seen)
	}
	if s.Stats().StoreFailures < 2 {
		t.Fatalf("store failures %d", s.Stats().StoreFailures)
	}
}

// TestSnapshotRestore: a second server on the same store resumes the
// persistent session with its subscription and queued message, and has the
// retained message.
func TestSnapshotRestore(t *testing.T) {
	ts := newTestStore()
	s1, addr := startServer(t, nil, Options{Store: ts})
	persistentSubscriber(t, addr, "durable", "t/#")
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)
	pub.publish("t/q", 1, false, 1, "queued")
	pub.nextAck(packet.PUBACK)
	pub.publish("t/r", 1, true, 2, "retained")
	pub.nextAck(packet.PUBACK)
	pub.publish("t/q2", 2, false, 3, "qos2")
	pub.nextAck(packet.PUBREC)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 3})
	pub.nextAck(packet.PUBCOMP)
	shutdown(t, s1)

	s2, addr2 := startServer(t, nil, Options{Store: ts})
	if st := s2.Stats(); st.Queued != 3 || st.Retained != 1 || st.ClientsDisconnected != 1 {
		t.Fatalf("restored stats %+v", st)
	}
	c := dialRaw(t, addr2, packet.V311)
	if ack := c.mustConnect("durable", false); !ack.SessionPresent {
		t.Fatal("session not restored")
	}
	var got []string
	for range 3 {
		p := c.nextPublish()
		got = append(got, string(p.Payload))
		if p.QoS == 2 {
			c.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
			c.nextAck(packet.PUBREL)
			c.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
		} else {
			c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
		}
	}
	if !slices.Equal(got, []string{"queued", "retained", "qos2"}) {
		t.Fatalf("redelivered %q", got)
	}
	waitFor(t, "queue drained", func() bool { return s2.Stats().Queued == 0 })
	sub := dialRaw(t, addr2, packet.V311)
	sub.mustConnect("new", true)
	sub.subscribe(1, "t/r", 1)
	if p := sub.nextPublish(); string(p.Payload) != "retained" || !p.Retain {
		t.Fatalf("retained after restart: %+v", p)
	}
}

// TestDurableStoreRestart: with the real on-disk store, a queued QoS 1
// message of a persistent session and a retained message survive a restart.
func TestDurableStoreRestart(t *testing.T) {
	dir := t.TempDir()
	open := func() *state.Durable {
		d, err := state.OpenDurable(dir, state.DurableOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	s1, addr := startServer(t, nil, Options{Store: open()})
	persistentSubscriber(t, addr, "durable", "d/#")
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	pub.publish("d/q", 1, false, 1, "queued")
	pub.nextAck(packet.PUBACK)
	pub.publish("d/r", 1, true, 2, "retained")
	pub.nextAck(packet.PUBACK)
	shutdown(t, s1)

	_, addr2 := startServer(t, nil, Options{Store: open()})
	c := dialRaw(t, addr2, packet.V311)
	if ack := c.mustConnect("durable", false); !ack.SessionPresent {
		t.Fatal("session not restored from disk")
	}
	for _, want := range []string{"queued", "retained"} {
		p := c.nextPublish()
		if string(p.Payload) != want {
			t.Fatalf("got %q, want %q", p.Payload, want)
		}
		c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	sub := dialRaw(t, addr2, packet.V311)
	sub.mustConnect("fresh", true)
	sub.subscribe(1, "d/r", 0)
	if p := sub.nextPublish(); string(p.Payload) != "retained" || !p.Retain {
		t.Fatalf("retained: %+v", p)
	}
}

// TestPubrecWaitsForCommitOnDuplicate: a QoS 2 PUBLISH sent again before the
// store has the first copy is neither routed again nor acknowledged early.
func TestPubrecWaitsForCommitOnDuplicate(t *testing.T) {
	ts := newTestStore()
	s, addr := startServer(t, nil, Options{Store: ts})
	persistentSubscriber(t, addr, "durable", "t")
	ts.mu.Lock()
	ts.hold = true
	ts.mu.Unlock()
	pub := dialRaw(t, addr, packet.V5)
	pub.mustConnect("pub", true)
	pub.publish("t", 2, false, 5, "once")
	pub.send(&packet.Publish{Topic: []byte("t"), QoS: 2, PacketID: 5, Dup: true, Payload: []byte("once")})
	pub.send(&packet.Pingreq{})
	if p := pub.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v before the store completed, want PINGRESP", p.Type())
	}
	waitFor(t, "commit held", func() bool { return ts.heldCount() > 0 })
	ts.release(nil)
	pub.nextAck(packet.PUBREC)
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 5})
	pub.nextAck(packet.PUBCOMP)
	if q := s.Stats().Queued; q != 1 {
		t.Fatalf("%d messages queued for the offline session, want 1", q)
	}
}

// holdCommits makes ts keep the done callbacks of the batches committed from
// now on until release.
func (ts *testStore) holdCommits() {
	ts.mu.Lock()
	ts.hold = true
	ts.mu.Unlock()
}

// hasOutbound reports whether a batch committed since batch number from
// records OpUpdateOutbound with phase for clientID.
func (ts *testStore) hasOutbound(from int, clientID string, phase state.Phase) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, b := range ts.batches[min(from, len(ts.batches)):] {
		for _, op := range b.Ops {
			if op.Kind == state.OpUpdateOutbound && op.ClientID == clientID && op.Outbound.Phase == phase {
				return true
			}
		}
	}
	return false
}

func (ts *testStore) batchCount() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.batches)
}

// TestQoS2OutboundWaitsForCommit: to a persistent subscriber, a QoS 2 PUBLISH
// is on the wire only once the batch recording it as Sent (with its packet id)
// is done, and PUBREL only once the batch recording Released is. A QoS 1
// message routed after it is not sent ahead of it. The PINGREQ sent while the
// store holds the batch is answered first, which shows the packet was held.
func TestQoS2OutboundWaitsForCommit(t *testing.T) {
	ts := newTestStore()
	_, addr := startServer(t, nil, Options{Store: ts})
	sub := dialRaw(t, addr, packet.V311)
	sub.mustConnect("durable", false)
	sub.subscribe(1, "t/#", 2)
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)

	from := ts.batchCount()
	ts.holdCommits()
	pub.publish("t/2", 2, false, 1, "exactly once")
	pub.publish("t/1", 1, false, 2, "after it")
	waitFor(t, "both routings held", func() bool { return ts.heldCount() >= 2 })
	sub.send(&packet.Pingreq{})
	if p := sub.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("subscriber got %v before the store recorded phase Sent, want PINGRESP", p.Type())
	}
	if !ts.hasOutbound(from, "durable", state.Sent) {
		t.Fatal("no batch records the QoS 2 delivery as Sent")
	}
	ts.release(nil)
	p := sub.nextPublish()
	if string(p.Payload) != "exactly once" || p.QoS != 2 || p.Dup {
		t.Fatalf("first delivery %+v", p)
	}
	if q1 := sub.nextPublish(); string(q1.Payload) != "after it" {
		t.Fatalf("second delivery %q", q1.Payload)
	} else {
		sub.send(&packet.Ack{Kind: packet.PUBACK, PacketID: q1.PacketID})
	}

	from = ts.batchCount()
	ts.holdCommits()
	sub.send(&packet.Ack{Kind: packet.PUBREC, PacketID: p.PacketID})
	waitFor(t, "Released batch held", func() bool { return ts.heldCount() > 0 && ts.hasOutbound(from, "durable", state.Released) })
	sub.send(&packet.Pingreq{})
	if got := sub.next(); got.Type() != packet.PINGRESP {
		t.Fatalf("subscriber got %v before the store recorded phase Released, want PINGRESP", got.Type())
	}
	ts.release(nil)
	if a := sub.nextAck(packet.PUBREL); a.PacketID != p.PacketID {
		t.Fatalf("PUBREL id %d, want %d", a.PacketID, p.PacketID)
	}
	sub.send(&packet.Ack{Kind: packet.PUBCOMP, PacketID: p.PacketID})
	pub.nextAck(packet.PUBREC)
	pub.nextAck(packet.PUBACK)
}

// TestQoS2OutboundStoreFailure: when the batch recording a QoS 2 delivery as
// Sent fails, nothing is sent and the subscriber is disconnected, to resume
// from what the store has.
func TestQoS2OutboundStoreFailure(t *testing.T) {
	ts := newTestStore()
	_, addr := startServer(t, nil, Options{Store: ts})
	sub := dialRaw(t, addr, packet.V311)
	sub.mustConnect("durable", false)
	sub.subscribe(1, "t", 2)
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", true)

	ts.holdCommits()
	pub.publish("t", 2, false, 1, "retry me")
	waitFor(t, "routing held", func() bool { return ts.heldCount() > 0 })
	// The routing batch holds the Sent record: the publisher is refused,
	// and the subscriber must see nothing and be disconnected.
	ts.release(errors.New("disk full"))
	if seen := sub.closed(); len(seen) != 0 {
		t.Fatalf("subscriber got %v, want the connection closed with nothing sent", seen)
	}
}
