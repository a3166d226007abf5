package state

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

// model applies batches the way the contract in state.go describes, directly
// on a Snapshot: the reference a durable store is checked against.
type model struct {
	s    *Snapshot
	refs map[uint64]int
}

func newModel() *model {
	return &model{s: emptySnapshot(), refs: map[uint64]int{}}
}

func emptySnapshot() *Snapshot {
	return &Snapshot{
		Messages: map[uint64]*Message{},
		Retained: map[string]uint64{},
		Queues:   map[string][]Outbound{},
		Inbound:  map[string][]uint16{},
		NextID:   1,
	}
}

func (m *model) unref(id uint64, touched *[]uint64) {
	m.refs[id]--
	*touched = append(*touched, id)
}

func (m *model) apply(b *Batch) {
	s := m.s
	var touched []uint64
	for _, op := range b.Ops {
		switch op.Kind {
		case OpPutSession:
			ss := *op.Session
			s.Sessions = slices.DeleteFunc(s.Sessions, func(x Session) bool { return x.ClientID == ss.ClientID })
			s.Sessions = append(s.Sessions, ss)
		case OpDeleteSession:
			s.Sessions = slices.DeleteFunc(s.Sessions, func(x Session) bool { return x.ClientID == op.ClientID })
			for _, o := range s.Queues[op.ClientID] {
				m.unref(o.MessageID, &touched)
			}
			delete(s.Queues, op.ClientID)
			delete(s.Inbound, op.ClientID)
		case OpPutMessage:
			msg := *op.Message
			if op.Message.ID >= s.NextID {
				s.NextID = op.Message.ID + 1
			}
			s.Messages[msg.ID] = &msg
			touched = append(touched, msg.ID)
		case OpSetRetained:
			if s.Messages[op.MessageID] == nil {
				continue
			}
			m.refs[op.MessageID]++
			if old, ok := s.Retained[op.Topic]; ok {
				m.unref(old, &touched)
			}
			s.Retained[op.Topic] = op.MessageID
		case OpClearRetained:
			if old, ok := s.Retained[op.Topic]; ok {
				m.unref(old, &touched)
				delete(s.Retained, op.Topic)
			}
		case OpEnqueue:
			o := *op.Outbound
			if s.Messages[o.MessageID] == nil {
				continue
			}
			m.refs[o.MessageID]++
			q := s.Queues[op.ClientID]
			if i := slices.IndexFunc(q, func(x Outbound) bool { return x.Seq == o.Seq }); i >= 0 {
				m.unref(q[i].MessageID, &touched)
				q = slices.Delete(q, i, i+1)
			}
			s.Queues[op.ClientID] = append(q, o)
		case OpUpdateOutbound:
			q := s.Queues[op.ClientID]
			if i := slices.IndexFunc(q, func(x Outbound) bool { return x.Seq == op.Outbound.Seq }); i >= 0 {
				q[i].Phase, q[i].PacketID = op.Outbound.Phase, op.Outbound.PacketID
			}
		case OpDequeue:
			q := s.Queues[op.ClientID]
			if i := slices.IndexFunc(q, func(x Outbound) bool { return x.Seq == op.Seq }); i >= 0 {
				m.unref(q[i].MessageID, &touched)
				q = slices.Delete(q, i, i+1)
				if len(q) == 0 {
					delete(s.Queues, op.ClientID)
				} else {
					s.Queues[op.ClientID] = q
				}
			}
		case OpPutInbound:
			if !slices.Contains(s.Inbound[op.ClientID], op.PacketID) {
				s.Inbound[op.ClientID] = append(s.Inbound[op.ClientID], op.PacketID)
			}
		case OpDeleteInbound:
			in := slices.DeleteFunc(s.Inbound[op.ClientID], func(x uint16) bool { return x == op.PacketID })
			if len(in) == 0 {
				delete(s.Inbound, op.ClientID)
			} else {
				s.Inbound[op.ClientID] = in
			}
		case OpPutWill:
			w := *op.Will
			if w.Message.ID >= s.NextID {
				s.NextID = w.Message.ID + 1
			}
			s.Wills = slices.DeleteFunc(s.Wills, func(x Will) bool { return x.ClientID == w.ClientID })
			s.Wills = append(s.Wills, w)
		case OpDeleteWill:
			s.Wills = slices.DeleteFunc(s.Wills, func(x Will) bool { return x.ClientID == op.ClientID })
		}
	}
	for _, id := range touched {
		if m.refs[id] <= 0 {
			delete(s.Messages, id)
			delete(m.refs, id)
		}
	}
}

// normalize sorts and fills a snapshot so that two equal states compare equal
// with reflect.DeepEqual.
func normalize(s *Snapshot) *Snapshot {
	c := *s
	c.Sessions = slices.Clone(s.Sessions)
	slices.SortFunc(c.Sessions, func(a, b Session) int { return cmp.Compare(a.ClientID, b.ClientID) })
	if len(c.Sessions) == 0 {
		c.Sessions = nil
	}
	for i := range c.Sessions {
		if len(c.Sessions[i].Subscriptions) == 0 {
			c.Sessions[i].Subscriptions = nil
		}
	}
	c.Messages = map[uint64]*Message{}
	for id, m := range s.Messages {
		c.Messages[id] = normMessage(m)
	}
	c.Queues = map[string][]Outbound{}
	for cid, q := range s.Queues {
		q = slices.Clone(q)
		slices.SortFunc(q, func(a, b Outbound) int { return cmp.Compare(a.Seq, b.Seq) })
		for i := range q {
			if len(q[i].SubIDs) == 0 {
				q[i].SubIDs = nil
			}
		}
		c.Queues[cid] = q
	}
	c.Inbound = map[string][]uint16{}
	for cid, in := range s.Inbound {
		in = slices.Clone(in)
		slices.Sort(in)
		c.Inbound[cid] = in
	}
	c.Wills = slices.Clone(s.Wills)
	for i := range c.Wills {
		c.Wills[i].Message = *normMessage(&c.Wills[i].Message)
	}
	slices.SortFunc(c.Wills, func(a, b Will) int { return cmp.Compare(a.ClientID, b.ClientID) })
	if len(c.Wills) == 0 {
		c.Wills = nil
	}
	c.Retained = maps0(s.Retained)
	return &c
}

func maps0(m map[string]uint64) map[string]uint64 {
	c := map[string]uint64{}
	for k, v := range m {
		c[k] = v
	}
	return c
}

func normMessage(m *Message) *Message {
	c := *m
	if c.Payload == nil {
		c.Payload = []byte{}
	}
	if len(c.User) == 0 {
		c.User = nil
	}
	return &c
}

// sameState reports the first difference between two snapshots, ignoring
// NextID (a store may know of ids the model has dropped).
func sameState(t testing.TB, got, want *Snapshot) error {
	t.Helper()
	g, w := normalize(got), normalize(want)
	if g.NextID < w.NextID {
		return fmt.Errorf("NextID %d, want at least %d", g.NextID, w.NextID)
	}
	g.NextID, w.NextID = 0, 0
	if !reflect.DeepEqual(g.Sessions, w.Sessions) {
		return fmt.Errorf("sessions\n got %+v\nwant %+v", g.Sessions, w.Sessions)
	}
	if !reflect.DeepEqual(g.Messages, w.Messages) {
		return fmt.Errorf("messages: got %d, want %d\n got %v\nwant %v", len(g.Messages), len(w.Messages), msgIDs(g.Messages), msgIDs(w.Messages))
	}
	if !reflect.DeepEqual(g.Retained, w.Retained) {
		return fmt.Errorf("retained\n got %v\nwant %v", g.Retained, w.Retained)
	}
	if !reflect.DeepEqual(g.Queues, w.Queues) {
		return fmt.Errorf("queues\n got %+v\nwant %+v", g.Queues, w.Queues)
	}
	if !reflect.DeepEqual(g.Inbound, w.Inbound) {
		return fmt.Errorf("inbound\n got %v\nwant %v", g.Inbound, w.Inbound)
	}
	if !reflect.DeepEqual(g.Wills, w.Wills) {
		return fmt.Errorf("wills\n got %+v\nwant %+v", g.Wills, w.Wills)
	}
	return nil
}

func msgIDs(m map[uint64]*Message) []uint64 {
	var ids []uint64
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ts is a time as the store gives it back (no monotonic reading).
func ts(sec int64) time.Time { return time.Unix(1_790_000_000+sec, sec*7919%1_000_000_000) }

func fullMessage(id uint64) *Message {
	return &Message{
		ID: id, Topic: fmt.Sprintf("sensors/gw-01/t%d", id), Payload: []byte(fmt.Sprintf(`{"v":%d}`, id)),
		QoS: byte(id % 3), Retain: id%2 == 0,
		PayloadFormat: 1, HasFormat: true, ContentType: "application/json", ResponseTopic: "reply/x",
		CorrelationData: []byte{1, 2, 3}, User: []UserProperty{{"k", "v"}, {"k", "w"}},
		Expiry: ts(int64(id) + 3600), Origin: "pub-1", Created: ts(int64(id)),
	}
}

func plainMessage(id uint64, payload int) *Message {
	return &Message{ID: id, Topic: fmt.Sprintf("t/%d", id%7), Payload: make([]byte, payload), QoS: 1}
}

// gen makes random but meaningful batches: every op kind, with references to
// things that exist more often than not.
type gen struct {
	r      *rand.Rand
	nextID uint64
	seq    map[string]uint64
	queued map[string][]uint64
	ids    []uint64 // stored messages that may be referred to
}

func newGen(seed uint64) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, 1)), nextID: 1, seq: map[string]uint64{}, queued: map[string][]uint64{}}
}

var genClients = []string{"alpha", "bravo", "charlie"}

func (g *gen) batch() *Batch {
	b := &Batch{}
	n := 1 + g.r.IntN(5)
	for range n {
		cid := genClients[g.r.IntN(len(genClients))]
		switch g.r.IntN(14) {
		case 0:
			b.Ops = append(b.Ops, Op{Kind: OpPutSession, ClientID: cid, Session: &Session{
				ClientID: cid, Version: 5, ExpiryInterval: uint32(g.r.IntN(1000)), DisconnectedAt: ts(int64(g.r.IntN(100))),
				Subscriptions: []Subscription{{Filter: "a/#", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 7}},
			}})
		case 1:
			if g.r.IntN(4) == 0 {
				b.Ops = append(b.Ops, Op{Kind: OpDeleteSession, ClientID: cid})
				delete(g.queued, cid)
			}
		case 2, 3, 4:
			id := g.nextID
			g.nextID++
			m := fullMessage(id)
			if g.r.IntN(2) == 0 {
				m = plainMessage(id, g.r.IntN(200))
			}
			b.Ops = append(b.Ops, Op{Kind: OpPutMessage, MessageID: id, Message: m})
			g.ids = append(g.ids, id)
			fallthrough
		case 5:
			if len(g.ids) == 0 {
				continue
			}
			id := g.ids[len(g.ids)-1-g.r.IntN(min(3, len(g.ids)))]
			g.seq[cid]++
			o := &Outbound{Seq: g.seq[cid], MessageID: id, QoS: byte(g.r.IntN(3)), SubIDs: []uint32{1, 300}, RetainFlag: g.r.IntN(2) == 0, Phase: Queued}
			b.Ops = append(b.Ops, Op{Kind: OpEnqueue, ClientID: cid, Outbound: o})
			g.queued[cid] = append(g.queued[cid], o.Seq)
		case 6:
			if len(g.ids) > 0 {
				b.Ops = append(b.Ops, Op{Kind: OpSetRetained, Topic: fmt.Sprintf("r/%d", g.r.IntN(4)), MessageID: g.ids[len(g.ids)-1]})
			}
		case 7:
			b.Ops = append(b.Ops, Op{Kind: OpClearRetained, Topic: fmt.Sprintf("r/%d", g.r.IntN(4))})
		case 8:
			if q := g.queued[cid]; len(q) > 0 {
				b.Ops = append(b.Ops, Op{Kind: OpUpdateOutbound, ClientID: cid, Outbound: &Outbound{Seq: q[g.r.IntN(len(q))], Phase: Phase(1 + g.r.IntN(2)), PacketID: uint16(1 + g.r.IntN(65535))}})
			}
		case 9, 10:
			if q := g.queued[cid]; len(q) > 0 {
				i := g.r.IntN(len(q))
				b.Ops = append(b.Ops, Op{Kind: OpDequeue, ClientID: cid, Seq: q[i]})
				g.queued[cid] = slices.Delete(q, i, i+1)
			}
		case 11:
			b.Ops = append(b.Ops, Op{Kind: OpPutInbound, ClientID: cid, PacketID: uint16(1 + g.r.IntN(5))})
		case 12:
			b.Ops = append(b.Ops, Op{Kind: OpDeleteInbound, ClientID: cid, PacketID: uint16(1 + g.r.IntN(5))})
		case 13:
			if g.r.IntN(2) == 0 {
				b.Ops = append(b.Ops, Op{Kind: OpPutWill, ClientID: cid, Will: &Will{ClientID: cid, Message: *fullMessage(0), Due: ts(int64(g.r.IntN(50)))}})
			} else {
				b.Ops = append(b.Ops, Op{Kind: OpDeleteWill, ClientID: cid})
			}
		}
	}
	return b
}

// commitWait commits b and waits for done.
func commitWait(s Store, b *Batch) error {
	ch := make(chan error, 1)
	s.Commit(b, func(err error) { ch <- err })
	return <-ch
}

// commitAll commits every batch concurrently (so that groups form) and
// returns the errors in order.
func commitAll(s Store, bs []*Batch) []error {
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	wg.Add(len(bs))
	for i, b := range bs {
		s.Commit(b, func(err error) { errs[i] = err; wg.Done() })
	}
	wg.Wait()
	return errs
}

func open(t testing.TB, dir string, opts DurableOptions) *Durable {
	t.Helper()
	d, err := OpenDurable(dir, opts)
	if err != nil {
		t.Fatalf("OpenDurable(%s): %v", dir, err)
	}
	return d
}

func mustClose(t testing.TB, d *Durable) {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func load(t testing.TB, d *Durable) *Snapshot {
	t.Helper()
	s, err := d.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

// reopen closes d, opens dir again and returns the store and its snapshot.
func reopen(t testing.TB, d *Durable, opts DurableOptions) (*Durable, *Snapshot) {
	t.Helper()
	mustClose(t, d)
	d = open(t, d.Dir(), opts)
	if bad, why := d.Damaged(); bad {
		t.Fatalf("store reported damaged after a clean close: %s", why)
	}
	return d, load(t, d)
}

var errInjected = errors.New("injected")
