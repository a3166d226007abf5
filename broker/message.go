package broker

import (
	"time"
	"unsafe"

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
)

// message is an application message the broker keeps beyond the PUBLISH that
// carried it: queued for a session, retained, or a will. It is immutable once
// built and shared by every queue that holds it.
type message struct {
	state.Message
	props *packet.Properties // v5 properties forwarded to subscribers; nil: none
	size  int                // bytes counted against queue bounds
	// internal messages ($SYS) are never written to the store: they are
	// rebuilt every interval and would only wear the SD card.
	internal bool
}

// bytesOf returns s's bytes without copying; the result must not be modified.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// stringOf returns b as a string without copying; b must not change while the
// result is in use.
func stringOf(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// newMessage copies a PUBLISH (which aliases a read buffer) into a message.
// The topic and the payload share one allocation.
func newMessage(id uint64, p *packet.Publish, topic, origin string, expiry, now time.Time) *message {
	b := make([]byte, len(topic)+len(p.Payload))
	copy(b, topic)
	copy(b[len(topic):], p.Payload)
	m := &message{Message: state.Message{
		ID:      id,
		Topic:   stringOf(b[:len(topic)]),
		Payload: b[len(topic):len(b):len(b)],
		QoS:     p.QoS,
		Retain:  p.Retain,
		Expiry:  expiry,
		Origin:  origin,
		Created: now,
	}}
	pr := &p.Props
	if pr.Has(packet.PropPayloadFormat) {
		m.HasFormat, m.PayloadFormat = true, pr.PayloadFormat
	}
	if pr.ContentType != nil {
		m.ContentType = string(pr.ContentType)
	}
	if pr.ResponseTopic != nil {
		m.ResponseTopic = string(pr.ResponseTopic)
	}
	if pr.CorrelationData != nil {
		m.CorrelationData = append([]byte{}, pr.CorrelationData...)
	}
	for _, u := range pr.User {
		m.User = append(m.User, state.UserProperty{Key: string(u.Key), Value: string(u.Value)})
	}
	m.build()
	return m
}

// build derives the queue size and the v5 properties to forward from the
// durable fields.
func (m *message) build() {
	m.size = len(m.Topic) + len(m.Payload) + 64
	m.props = nil
	if !m.HasFormat && m.ContentType == "" && m.ResponseTopic == "" && m.CorrelationData == nil && len(m.User) == 0 {
		return
	}
	pr := &packet.Properties{}
	if m.HasFormat {
		pr.PayloadFormat = m.PayloadFormat
		pr.Set(packet.PropPayloadFormat)
	}
	if m.ContentType != "" {
		pr.ContentType = bytesOf(m.ContentType)
	}
	if m.ResponseTopic != "" {
		pr.ResponseTopic = bytesOf(m.ResponseTopic)
	}
	if m.CorrelationData != nil {
		pr.CorrelationData = m.CorrelationData
	}
	if len(m.User) > 0 {
		pr.User = make([]packet.UserProperty, len(m.User))
		for i, u := range m.User {
			pr.User[i] = packet.UserProperty{Key: bytesOf(u.Key), Value: bytesOf(u.Value)}
		}
	}
	m.props = pr
}

// publish fills p with m as published (QoS, retain as received), without
// expiry; the caller adjusts per delivery.
func (m *message) publish(p *packet.Publish) {
	*p = packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: bytesOf(m.Topic), Payload: m.Payload}
	if m.props != nil {
		p.Props = *m.props
	}
}

func (m *message) expired(now time.Time) bool {
	return !m.Expiry.IsZero() && !now.Before(m.Expiry)
}

// tx collects the store operations of one state change. With a durable store
// it holds storeMu from begin to commit so that batches reach the store in the
// order of the changes they describe; otherwise it does nothing.
type tx struct {
	s      *Server
	locked bool // holds storeMu and collects ops
	ops    []state.Op
	puts   []*message // messages already in ops
	holds  []*hold    // sends waiting for this batch (see holdLocked)
}

func (s *Server) begin() tx {
	if s.durable {
		s.storeMu.Lock()
	}
	return tx{s: s, locked: s.durable}
}

// beginTransient is begin for a change that cannot need the store (a QoS 0,
// non-retained PUBLISH is never queued or retained): it keeps storeMu off the
// QoS 0 hot path even with a durable store.
func (s *Server) beginTransient() tx { return tx{s: s} }

func (t *tx) add(op state.Op) {
	if t.locked {
		t.ops = append(t.ops, op)
	}
}

// putMessage adds OpPutMessage for m once, ahead of the ops that refer to it.
func (t *tx) putMessage(m *message) {
	if !t.locked || m.internal {
		return
	}
	for _, p := range t.puts {
		if p == m {
			return
		}
	}
	t.puts = append(t.puts, m)
	t.ops = append(t.ops, state.Op{Kind: state.OpPutMessage, MessageID: m.ID, Message: &m.Message})
}

// commit hands the batch to the store. done (may be nil) runs when the batch
// is durable, at once when there is nothing to store.
func (t *tx) commit(done func(error)) {
	s := t.s
	if !t.locked {
		if done != nil {
			done(nil)
		}
		return
	}
	if len(t.ops) == 0 {
		s.storeMu.Unlock()
		if done != nil {
			done(nil)
		}
		return
	}
	b := &state.Batch{Ops: t.ops}
	t.ops = nil
	if done == nil {
		done = s.logCommitError
	}
	if holds := t.holds; len(holds) > 0 {
		t.holds = nil
		inner := done
		done = func(err error) {
			inner(err)
			s.releaseHolds(holds, err)
		}
	}
	s.store.Commit(b, done)
	s.storeMu.Unlock()
}

// commitAck is commit with c's acknowledgement of the inbound QoS 1/2
// PUBLISH id as done (conn.ackStored); without a batch to store it is sent
// at once, with no callback to allocate.
func (t *tx) commitAck(c *conn, qos byte, id uint16) {
	if !t.locked || len(t.ops) == 0 {
		t.commit(nil)
		c.ackStored(qos, id, nil)
		return
	}
	t.commit(func(err error) { c.ackStored(qos, id, err) })
}

func (s *Server) logCommitError(err error) {
	if err != nil {
		s.stats.storeFailures.Add(1)
		s.log.Error("broker: store commit failed", "err", err)
	}
}
