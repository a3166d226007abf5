package load

import (
	"gatewayd/scripts/bench/internal/hist"
)

// Verifier checks the messages one subscriber receives. It is used by one
// goroutine at a time.
type Verifier struct {
	// Owns, if set, says whether this subscriber should receive message seq
	// of publisher pub; messages it does not own count as Misrouted.
	Owns func(pub uint32, seq uint64) bool

	pubs []pubState

	Received  uint64 // PUBLISH packets seen
	Unique    uint64 // distinct valid messages
	Dups      uint64 // valid messages seen before
	Reordered uint64 // first seen after a later message of the same publisher
	Corrupt   uint64 // wrong size, bad checksum or unknown publisher
	Misrouted uint64 // not owned by this subscriber
	Latency   *hist.H
}

type pubState struct {
	seen []uint64 // bitset of sequence numbers
	next uint64   // one past the highest sequence number seen
}

// NewVerifier returns a verifier for publishers with ids 0..publishers-1.
func NewVerifier(publishers int) *Verifier {
	return &Verifier{pubs: make([]pubState, publishers), Latency: hist.New()}
}

// Check verifies one payload received at nowNs.
func (v *Verifier) Check(payload []byte, nowNs int64) {
	v.Received++
	pub, seq, sent, ok := ParsePayload(payload)
	if !ok || int(pub) >= len(v.pubs) || seq > 1<<40 {
		v.Corrupt++
		return
	}
	if v.Owns != nil && !v.Owns(pub, seq) {
		v.Misrouted++
		return
	}
	ps := &v.pubs[pub]
	w, bit := seq/64, uint64(1)<<(seq%64)
	if w >= uint64(len(ps.seen)) {
		n := 2 * uint64(len(ps.seen))
		if n <= w {
			n = w + 1024
		}
		grown := make([]uint64, n)
		copy(grown, ps.seen)
		ps.seen = grown
	}
	if ps.seen[w]&bit != 0 {
		v.Dups++
		return
	}
	ps.seen[w] |= bit
	v.Unique++
	if seq+1 < ps.next {
		v.Reordered++
	} else {
		ps.next = seq + 1
	}
	v.Latency.Record(nowNs - sent)
}
