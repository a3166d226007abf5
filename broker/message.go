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
	topic []byte            // Topic's bytes, for encoding without copying
	props packet.Properties // v5 properties forwarded to subscribers
	size  int               // bytes counted against queue bounds
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
func newMessage(id uint64, p *packet.Publish, topic, origin string, expiry, now time.Time) *message {
	m := &message{Message: state.Message{
		ID:      id,
		Topic:   topic,
		Payload: append([]byte(nil), p.Payload...),
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

// build derives the encoding helpers from the durable fields.
func (m *message) build() {
	m.topic = bytesOf(m.Topic)
	m.props = packet.Properties{}
	if m.HasFormat {
		m.props.PayloadFormat = m.PayloadFormat
		m.props.Set(packet.PropPayloadFormat)
	}
	if m.ContentType != "" {
		m.props.ContentType = bytesOf(m.ContentType)
	}
	if m.ResponseTopic != "" {
		m.props.ResponseTopic = bytesOf(m.ResponseTopic)
	}
	if m.CorrelationData != nil {
		m.props.CorrelationData = m.CorrelationData
	}
	if len(m.User) > 0 {
		m.props.User = make([]packet.UserProperty, len(m.User))
		for i, u := range m.User {
			m.props.User[i] = packet.UserProperty{Key: bytesOf(u.Key), Value: bytesOf(u.Value)}
		}
	}
	m.size = len(m.Topic) + len(m.Payload) + 64
}

// publish fills p with m as published (QoS, retain as received), without
// expiry; the caller adjusts per delivery.
func (m *message) publish(p *packet.Publish) {
	*p = packet.Publish{QoS: m.QoS, Retain: m.Retain, Topic: m.topic, Props: m.props, Payload: m.Payload}
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

func (s *Server) logCommitError(err error) {
	if err != nil {
		s.stats.storeFailures.Add(1)
		s.log.Error("broker: store commit failed", "err", err)
	}
}
