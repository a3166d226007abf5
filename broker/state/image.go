package state

import (
	"cmp"
	"slices"
)

// image is the live state a durable store holds, kept in memory by the writer
// goroutine so that it can count references, enforce the quota and write a
// snapshot without reading the log back. Sessions, messages and wills are kept
// as their encoded operation (immutable once stored), so a snapshot is a copy
// of map entries and costs about as much memory as the live data.
type image struct {
	sessions map[string][]byte // encoded OpPutSession
	msgs     map[uint64]*msgEntry
	retained map[string]uint64
	queues   map[string]map[uint64]queued
	inbound  map[string]map[uint16]struct{}
	wills    map[string][]byte // encoded OpPutWill
	nextID   uint64
	bytes    int64 // live bytes: what a snapshot of this image would hold

	touched []uint64 // messages whose count fell to zero or were put in this batch
	sawEnd  bool     // a snapshot end marker was applied
}

type msgEntry struct {
	enc  []byte // encoded OpPutMessage
	refs int32
}

type queued struct {
	o    Outbound
	size int32
}

func newImage() *image {
	return &image{
		sessions: map[string][]byte{},
		msgs:     map[uint64]*msgEntry{},
		retained: map[string]uint64{},
		queues:   map[string]map[uint64]queued{},
		inbound:  map[string]map[uint16]struct{}{},
		wills:    map[string][]byte{},
		nextID:   1,
	}
}

// Sizes charged for entries that are not stored encoded.
const (
	retainedCost = 8 // op kind, lengths and a message id
	inboundCost  = 4
)

// applyBatches applies every batch encoded in p (concatenated). With gc, a
// message that nothing refers to is dropped at the end of each batch; a
// snapshot is applied with gc false and collected once at its end, because it
// stores messages before the queues that refer to them.
func (im *image) applyBatches(p []byte, gc bool) error {
	d := decoder{b: p}
	for !d.done() {
		if err := im.applyBatch(&d, gc); err != nil {
			return err
		}
	}
	return d.err
}

func (im *image) applyBatch(d *decoder, gc bool) error {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		start := d.off
		op := d.op()
		if d.err != nil {
			break
		}
		im.apply(&op, d.b[start:d.off])
	}
	if d.err != nil {
		return d.err
	}
	if gc {
		im.collect()
	}
	return nil
}

// collect drops the messages touched by the last batch that nothing refers to.
func (im *image) collect() {
	for _, id := range im.touched {
		if e, ok := im.msgs[id]; ok && e.refs <= 0 {
			im.bytes -= int64(len(e.enc))
			delete(im.msgs, id)
		}
	}
	im.touched = im.touched[:0]
}

// collectAll drops every message that nothing refers to.
func (im *image) collectAll() {
	for id, e := range im.msgs {
		if e.refs <= 0 {
			im.bytes -= int64(len(e.enc))
			delete(im.msgs, id)
		}
	}
	im.touched = im.touched[:0]
}

func (im *image) ref(id uint64) bool {
	e, ok := im.msgs[id]
	if ok {
		e.refs++
	}
	return ok
}

func (im *image) unref(id uint64) {
	if e, ok := im.msgs[id]; ok {
		e.refs--
		if e.refs <= 0 {
			im.touched = append(im.touched, id)
		}
	}
}

func (im *image) seeID(id uint64) {
	if id >= im.nextID {
		im.nextID = id + 1
	}
}

// apply applies one decoded op whose encoding is enc (an alias of the read
// buffer: copied when kept). It is lenient: an op that refers to something
// absent (a batch that failed before it, or a broker bug) changes nothing, so
// replay is always possible.
func (im *image) apply(op *Op, enc []byte) {
	switch op.Kind {
	case OpPutSession:
		old, ok := im.sessions[op.ClientID]
		if ok {
			im.bytes -= int64(len(old))
		}
		im.sessions[op.ClientID] = clone(enc)
		im.bytes += int64(len(enc))
	case OpDeleteSession:
		if old, ok := im.sessions[op.ClientID]; ok {
			im.bytes -= int64(len(old))
			delete(im.sessions, op.ClientID)
		}
		for _, q := range im.queues[op.ClientID] {
			im.bytes -= int64(q.size)
			im.unref(q.o.MessageID)
		}
		delete(im.queues, op.ClientID)
		im.bytes -= int64(len(im.inbound[op.ClientID]) * (inboundCost + len(op.ClientID)))
		delete(im.inbound, op.ClientID)
	case OpPutMessage:
		im.seeID(op.MessageID)
		if e, ok := im.msgs[op.MessageID]; ok {
			im.bytes += int64(len(enc) - len(e.enc))
			e.enc = clone(enc)
			return
		}
		im.msgs[op.MessageID] = &msgEntry{enc: clone(enc)}
		im.bytes += int64(len(enc))
		im.touched = append(im.touched, op.MessageID)
	case OpSetRetained:
		if !im.ref(op.MessageID) {
			return
		}
		if old, ok := im.retained[op.Topic]; ok {
			im.unref(old)
		} else {
			im.bytes += int64(retainedCost + len(op.Topic))
		}
		im.retained[op.Topic] = op.MessageID
	case OpClearRetained:
		if old, ok := im.retained[op.Topic]; ok {
			im.unref(old)
			delete(im.retained, op.Topic)
			im.bytes -= int64(retainedCost + len(op.Topic))
		}
	case OpEnqueue:
		if !im.ref(op.Outbound.MessageID) {
			return
		}
		q := im.queues[op.ClientID]
		if q == nil {
			q = map[uint64]queued{}
			im.queues[op.ClientID] = q
		}
		if old, ok := q[op.Outbound.Seq]; ok {
			im.bytes -= int64(old.size)
			im.unref(old.o.MessageID)
		}
		q[op.Outbound.Seq] = queued{o: *op.Outbound, size: int32(len(enc))}
		im.bytes += int64(len(enc))
	case OpUpdateOutbound:
		q := im.queues[op.ClientID]
		if e, ok := q[op.Outbound.Seq]; ok {
			e.o.Phase = op.Outbound.Phase
			e.o.PacketID = op.Outbound.PacketID
			q[op.Outbound.Seq] = e
		}
	case OpDequeue:
		q := im.queues[op.ClientID]
		if e, ok := q[op.Seq]; ok {
			im.bytes -= int64(e.size)
			im.unref(e.o.MessageID)
			delete(q, op.Seq)
			if len(q) == 0 {
				delete(im.queues, op.ClientID)
			}
		}
	case OpPutInbound:
		s := im.inbound[op.ClientID]
		if s == nil {
			s = map[uint16]struct{}{}
			im.inbound[op.ClientID] = s
		}
		if _, ok := s[op.PacketID]; !ok {
			s[op.PacketID] = struct{}{}
			im.bytes += int64(inboundCost + len(op.ClientID))
		}
	case OpDeleteInbound:
		s := im.inbound[op.ClientID]
		if _, ok := s[op.PacketID]; ok {
			delete(s, op.PacketID)
			im.bytes -= int64(inboundCost + len(op.ClientID))
			if len(s) == 0 {
				delete(im.inbound, op.ClientID)
			}
		}
	case OpPutWill:
		im.seeID(op.Will.Message.ID)
		if old, ok := im.wills[op.ClientID]; ok {
			im.bytes -= int64(len(old))
		}
		im.wills[op.ClientID] = clone(enc)
		im.bytes += int64(len(enc))
	case OpDeleteWill:
		if old, ok := im.wills[op.ClientID]; ok {
			im.bytes -= int64(len(old))
			delete(im.wills, op.ClientID)
		}
	case opSnapEnd:
		im.sawEnd = true
	case opNextID:
		if op.MessageID > im.nextID {
			im.nextID = op.MessageID
		}
	}
}

func clone(b []byte) []byte { return append(make([]byte, 0, len(b)), b...) }

// frozen is a point-in-time copy of an image for the compactor: the encoded
// slices are shared (they are never modified), the maps are not.
type frozen struct {
	sessions [][]byte
	msgs     [][]byte
	retained []retainedRef
	queues   []clientQueue
	inbound  []clientInbound
	wills    [][]byte
	nextID   uint64
}

type retainedRef struct {
	topic string
	id    uint64
}

type clientQueue struct {
	clientID string
	out      []Outbound
}

type clientInbound struct {
	clientID string
	ids      []uint16
}

func (im *image) freeze() *frozen {
	f := &frozen{nextID: im.nextID}
	f.sessions = make([][]byte, 0, len(im.sessions))
	for _, s := range im.sessions {
		f.sessions = append(f.sessions, s)
	}
	f.msgs = make([][]byte, 0, len(im.msgs))
	for _, e := range im.msgs {
		f.msgs = append(f.msgs, e.enc)
	}
	f.retained = make([]retainedRef, 0, len(im.retained))
	for t, id := range im.retained {
		f.retained = append(f.retained, retainedRef{t, id})
	}
	for cid, q := range im.queues {
		cq := clientQueue{clientID: cid, out: make([]Outbound, 0, len(q))}
		for _, e := range q {
			cq.out = append(cq.out, e.o)
		}
		f.queues = append(f.queues, cq)
	}
	for cid, s := range im.inbound {
		ci := clientInbound{clientID: cid, ids: make([]uint16, 0, len(s))}
		for id := range s {
			ci.ids = append(ci.ids, id)
		}
		f.inbound = append(f.inbound, ci)
	}
	f.wills = make([][]byte, 0, len(im.wills))
	for _, w := range im.wills {
		f.wills = append(f.wills, w)
	}
	return f
}

// snapshot decodes the image into what Load returns.
func (im *image) snapshot() *Snapshot {
	s := &Snapshot{
		Messages: make(map[uint64]*Message, len(im.msgs)),
		Retained: make(map[string]uint64, len(im.retained)),
		Queues:   make(map[string][]Outbound, len(im.queues)),
		Inbound:  make(map[string][]uint16, len(im.inbound)),
		NextID:   im.nextID,
	}
	for _, enc := range im.sessions {
		d := decoder{b: enc}
		if op := d.op(); d.err == nil && op.Session != nil {
			s.Sessions = append(s.Sessions, *op.Session)
		}
	}
	slices.SortFunc(s.Sessions, func(a, b Session) int { return cmp.Compare(a.ClientID, b.ClientID) })
	for id, e := range im.msgs {
		d := decoder{b: e.enc}
		if op := d.op(); d.err == nil {
			s.Messages[id] = op.Message
		}
	}
	for t, id := range im.retained {
		s.Retained[t] = id
	}
	for cid, q := range im.queues {
		out := make([]Outbound, 0, len(q))
		for _, e := range q {
			out = append(out, e.o)
		}
		slices.SortFunc(out, func(a, b Outbound) int { return cmp.Compare(a.Seq, b.Seq) })
		s.Queues[cid] = out
	}
	for cid, set := range im.inbound {
		ids := make([]uint16, 0, len(set))
		for id := range set {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		s.Inbound[cid] = ids
	}
	for _, enc := range im.wills {
		d := decoder{b: enc}
		if op := d.op(); d.err == nil && op.Will != nil {
			s.Wills = append(s.Wills, *op.Will)
		}
	}
	slices.SortFunc(s.Wills, func(a, b Will) int { return cmp.Compare(a.ClientID, b.ClientID) })
	return s
}
