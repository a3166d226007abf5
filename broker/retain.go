package broker

// The retained store's bounds: max_retained_messages and max_retained_bytes
// count what clients retained ($SYS values are the broker's own and do not
// count). retainMu makes each check and the change it allows one step.

func retainedSize(topic string, payload []byte) int { return len(topic) + len(payload) }

// retainFits reports whether a retained message of size bytes for topic is
// within the bounds: a replacement always is unless it grows the bytes
// beyond max_retained_bytes; a new topic needs room in both.
func (s *Server) retainFits(topic string, size int) bool {
	maxN, maxB := s.cfg.MaxRetainedMessages, s.cfg.MaxRetainedBytes
	if maxN == 0 && maxB == 0 {
		return true
	}
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	return s.retainFitsLocked(topic, size)
}

func (s *Server) retainFitsLocked(topic string, size int) bool {
	maxN, maxB := s.cfg.MaxRetainedMessages, s.cfg.MaxRetainedBytes
	n, b := s.retainedCount+1, s.retainedBytes+size
	if old, ok := s.retained.Get(topic); ok && !old.internal {
		n, b = n-1, b-retainedSize(old.Topic, old.Payload)
	}
	return (maxN == 0 || n <= maxN) && (maxB == 0 || b <= maxB)
}

// setRetained makes m the retained message of its topic if the bounds allow
// (always for the broker's own messages, and when restoring) and reports
// whether it did.
func (s *Server) setRetained(m *message, check bool) bool {
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	size := retainedSize(m.Topic, m.Payload)
	if check && !m.internal && !s.retainFitsLocked(m.Topic, size) {
		return false
	}
	if old, ok := s.retained.Get(m.Topic); ok {
		s.uncountLocked(old)
	}
	s.retained.Set(m.Topic, m)
	if !m.internal {
		s.retainedCount++
		s.retainedBytes += size
	}
	return true
}

// deleteRetained clears topic's retained message; old, when not nil, must be
// the message in place for it to go. It reports whether one was removed
// and returns it.
func (s *Server) deleteRetained(topic string, old *message) (*message, bool) {
	s.retainMu.Lock()
	defer s.retainMu.Unlock()
	cur, ok := s.retained.Get(topic)
	if !ok || old != nil && cur != old {
		return nil, false
	}
	s.retained.Delete(topic)
	s.uncountLocked(cur)
	return cur, true
}

func (s *Server) uncountLocked(m *message) {
	if !m.internal {
		s.retainedCount--
		s.retainedBytes -= retainedSize(m.Topic, m.Payload)
	}
}
