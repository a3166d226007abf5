// Package hist is a fixed-size log-linear histogram of durations in
// nanoseconds: 64 sub-buckets per power of two, so a quantile is within
// about 1.6% of the true value. Recording is an index computation and an
// increment; nothing is allocated after New.
package hist

import (
	"math/bits"
	"time"
)

const (
	precBits = 7 // values below 1<<precBits are exact
	sub      = 1 << (precBits - 1)
	nBuckets = 1<<precBits + (64-precBits)*sub
)

// H is a histogram. The zero value is not usable; use New.
type H struct {
	counts []uint64
	n      uint64
	max    int64
}

// New returns an empty histogram.
func New() *H { return &H{counts: make([]uint64, nBuckets)} }

func index(v uint64) int {
	m := bits.Len64(v)
	if m <= precBits {
		return int(v)
	}
	shift := m - precBits
	top := v >> shift // in [sub, 2*sub)
	return 1<<precBits + (shift-1)*sub + int(top-sub)
}

// lowerBound is the smallest value that falls in bucket i, and width its size.
func bounds(i int) (lo, width uint64) {
	if i < 1<<precBits {
		return uint64(i), 1
	}
	j := i - 1<<precBits
	shift := j/sub + 1
	top := uint64(j%sub + sub)
	return top << shift, 1 << shift
}

// Record adds one value; negative values count as 0.
func (h *H) Record(ns int64) {
	if ns < 0 {
		ns = 0
	}
	h.counts[index(uint64(ns))]++
	h.n++
	if ns > h.max {
		h.max = ns
	}
}

// Count is the number of recorded values.
func (h *H) Count() uint64 { return h.n }

// Max is the largest recorded value.
func (h *H) Max() time.Duration { return time.Duration(h.max) }

// Merge adds o's values to h.
func (h *H) Merge(o *H) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// Quantile returns the value at quantile q (0..1): the middle of the bucket
// holding it, capped at the maximum recorded. It returns 0 for no values.
func (h *H) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, w := bounds(i)
			v := int64(lo + w/2)
			if v > h.max {
				v = h.max
			}
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
