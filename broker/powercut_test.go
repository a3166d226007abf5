package broker

import (
	"slices"
	"sync"
	"testing"
	"time"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
)

// powerCutStore stands in for a store whose power goes: the batches committed
// before cut are durable (applied to durable, their done called); from cut on
// a batch never finishes its fsync (its done is never called) and is lost.
type powerCutStore struct {
	durable *testStore
	mu      sync.Mutex
	cut     int // batches that become durable; < 0: all
	n       int
}

func (p *powerCutStore) Load() (*state.Snapshot, error) { return p.durable.Load() }
func (p *powerCutStore) Durable() bool                  { return true }
func (p *powerCutStore) Close() error                   { return nil }

func (p *powerCutStore) Commit(b *state.Batch, done func(error)) {
	p.mu.Lock()
	p.n++
	lost := p.cut >= 0 && p.n > p.cut
	p.mu.Unlock()
	if !lost {
		p.durable.Commit(b, done)
	}
}

// cutAfter lets k more batches become durable and loses every later one.
func (p *powerCutStore) cutAfter(k int) {
	p.mu.Lock()
	p.cut = p.n + k
	p.mu.Unlock()
}

// restart starts a broker on what survived the power cut.
func (p *powerCutStore) restart(t *testing.T) (*Server, string) {
	t.Helper()
	after := newTestStore()
	snap, _ := p.durable.Load()
	after.snap = *snap
	return startServer(t, nil, Options{Store: after})
}

// takeQoS1 reads n QoS 1 PUBLISHes, acknowledging each, and returns their
// payloads.
func takeQoS1(c *rawClient, n int) []string {
	c.t.Helper()
	var got []string
	for len(got) < n {
		p := c.nextPublish()
		got = append(got, string(p.Payload))
		c.send(&packet.Ack{Kind: packet.PUBACK, PacketID: p.PacketID})
	}
	return got
}

// publishQoS2 publishes payload on "t" at QoS 2 with packet id id, through
// PUBCOMP.
func publishQoS2(c *rawClient, id uint16, payload string) {
	c.t.Helper()
	c.publish("t", 2, false, id, payload)
	c.nextAck(packet.PUBREC)
	c.send(&packet.Ack{Kind: packet.PUBREL, PacketID: id})
	c.nextAck(packet.PUBCOMP)
}

// PUBCOMP frees the packet id, and the client may use it for its next QoS 2
// message at once. So it goes out only once the store has forgotten the id:
// otherwise a restart finds the id still taken and drops that next message
// as a duplicate, after acknowledging it.
func TestPubcompWaitsUntilTheReleaseIsStored(t *testing.T) {
	ps := &powerCutStore{durable: newTestStore(), cut: -1}
	_, addr := startServer(t, nil, Options{Store: ps})
	persistentSubscriber(t, addr, "sub", "t")
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", false)
	pub.publish("t", 2, false, 7, "first")
	pub.nextAck(packet.PUBREC)

	ps.cutAfter(0) // the release's fsync never finishes
	pub.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	pub.send(&packet.Pingreq{})
	if p := pub.next(); p.Type() != packet.PINGRESP {
		t.Fatalf("got %v while the release was not stored, want PINGRESP (PUBCOMP held back)", p.Type())
	}

	_, addr2 := ps.restart(t)
	pub2 := dialRaw(t, addr2, packet.V311)
	if !pub2.mustConnect("pub", false).SessionPresent {
		t.Fatal("the publisher's session did not survive")
	}
	// No PUBCOMP came: the client sends PUBREL again, then reuses the id.
	pub2.send(&packet.Ack{Kind: packet.PUBREL, PacketID: 7})
	pub2.nextAck(packet.PUBCOMP)
	publishQoS2(pub2, 7, "second")

	sub := dialRaw(t, addr2, packet.V311)
	sub.mustConnect("sub", false)
	if got := takeQoS1(sub, 2); !slices.Equal(got, []string{"first", "second"}) {
		t.Fatalf("subscriber got %q, want [first second]", got)
	}
}

// A will due at start-up is deleted from the store in the batch that queues
// it for its subscribers: a power cut leaves either both or neither.
func TestDueWillDeletedInTheBatchThatQueuesIt(t *testing.T) {
	ts := newTestStore()
	ts.snap.Sessions = []state.Session{{ClientID: "sub", Version: 4, ExpiryInterval: 3600,
		DisconnectedAt: time.Now(), Subscriptions: []state.Subscription{{Filter: "will/t", QoS: 1}}}}
	ts.snap.Wills = []state.Will{{ClientID: "gone", Due: time.Now().Add(-time.Second),
		Message: state.Message{Topic: "will/t", QoS: 1, Payload: []byte("bye"), Created: time.Now()}}}
	ps := &powerCutStore{durable: ts, cut: 1} // only start-up's first batch is durable
	s1, _ := startServer(t, nil, Options{Store: ps})
	waitFor(t, "the will queued", func() bool { return s1.Stats().Queued == 1 })

	s2, addr2 := ps.restart(t)
	if q := s2.Stats().Queued; q != 1 {
		t.Errorf("after the power cut: %d queued for sub, want the will", q)
	}
	sub := dialRaw(t, addr2, packet.V311)
	sub.mustConnect("sub", false)
	if p := sub.nextPublish(); string(p.Payload) != "bye" {
		t.Fatalf("sub got %q, want the will", p.Payload)
	}
}

// A delayed will that falls due is deleted in the batch that queues it.
func TestDelayedWillDeletedInTheBatchThatQueuesIt(t *testing.T) {
	ps := &powerCutStore{durable: newTestStore(), cut: -1}
	_, addr := startServer(t, nil, Options{Store: ps})
	persistentSubscriber(t, addr, "sub", "will/t")
	c := dialRaw(t, addr, packet.V5)
	if ca := c.connect(rawConnect{id: "gone", expiry: 3600, will: "will/t", willPayload: "bye", willQoS: 1, willDelay: 1}.packet()); ca.Reason != packet.Success {
		t.Fatalf("CONNACK %v", ca.Reason)
	}
	c.nc.Close() // lost without DISCONNECT: the will waits its delay
	waitFor(t, "the will stored", func() bool {
		snap, _ := ps.durable.Load()
		return len(snap.Wills) == 1
	})
	// The power goes after the first batch of the will falling due.
	ps.cutAfter(1)
	time.Sleep(1500 * time.Millisecond)

	s2, addr2 := ps.restart(t)
	if q := s2.Stats().Queued; q != 1 {
		t.Errorf("after the power cut: %d queued for sub, want the will (restored and due)", q)
	}
	sub := dialRaw(t, addr2, packet.V311)
	sub.mustConnect("sub", false)
	if p := sub.nextPublish(); string(p.Payload) != "bye" {
		t.Fatalf("sub got %q, want the will", p.Payload)
	}
}

// ReleaseInbound frees the QoS 2 ids an offline session holds, in memory and
// in the store, so that a client starting afresh can use them again.
func TestReleaseInboundFreesHeldQoS2IDs(t *testing.T) {
	ts := newTestStore()
	s, addr := startServer(t, nil, Options{Store: ts})
	persistentSubscriber(t, addr, "sub", "t")
	pub := dialRaw(t, addr, packet.V311)
	pub.mustConnect("pub", false)
	pub.publish("t", 2, false, 5, "first")
	pub.nextAck(packet.PUBREC)
	if n := s.ReleaseInbound("pub"); n != 0 {
		t.Fatalf("released %d ids of a connected session, want 0", n)
	}
	pub.send(&packet.Disconnect{})
	pub.closed() // gone before PUBREL: id 5 stays held
	if n := s.ReleaseInbound("pub"); n != 1 {
		t.Fatalf("released %d ids, want 1", n)
	}
	if snap, _ := ts.Load(); len(snap.Inbound["pub"]) != 0 {
		t.Fatalf("store still holds inbound ids %v", snap.Inbound["pub"])
	}
	// A fresh client reuses id 5 for a new message: delivered, not taken
	// for a duplicate.
	pub2 := dialRaw(t, addr, packet.V311)
	pub2.mustConnect("pub", false)
	publishQoS2(pub2, 5, "second")
	sub := dialRaw(t, addr, packet.V311)
	sub.mustConnect("sub", false)
	if got := takeQoS1(sub, 2); !slices.Equal(got, []string{"first", "second"}) {
		t.Fatalf("subscriber got %q, want [first second]", got)
	}
}

// EndSession ends an offline session in memory and in the store, and leaves
// a connected one alone.
func TestEndSessionEndsOnlyOfflineSessions(t *testing.T) {
	ts := newTestStore()
	s, addr := startServer(t, nil, Options{Store: ts})
	persistentSubscriber(t, addr, "gone", "t")
	on := dialRaw(t, addr, packet.V311)
	on.mustConnect("here", false)
	if s.EndSession("here") {
		t.Fatal("ended a connected client's session")
	}
	if ids := s.SessionIDs(""); !slices.Equal(ids, []string{"gone", "here"}) {
		t.Fatalf("sessions %v", ids)
	}
	if !s.EndSession("gone") || s.EndSession("gone") {
		t.Fatal("EndSession of the offline session: want true once, then false")
	}
	if ids := s.SessionIDs("g"); len(ids) != 0 {
		t.Fatalf("sessions %v after EndSession", ids)
	}
	snap, _ := ts.Load()
	for _, se := range snap.Sessions {
		if se.ClientID == "gone" {
			t.Fatal("the store still holds the ended session")
		}
	}
	if st := s.Stats(); st.ClientsDisconnected != 0 {
		t.Fatalf("ClientsDisconnected %d, want 0", st.ClientsDisconnected)
	}
}
