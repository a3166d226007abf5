package hist

import (
	"testing"
	"time"
)

func TestBucketsAreContiguous(t *testing.T) {
	prevIdx := -1
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<40 + 12345, 1<<63 - 1} {
		i := index(v)
		lo, w := bounds(i)
		if v < lo || v >= lo+w {
			t.Fatalf("value %d in bucket %d [%d,%d)", v, i, lo, lo+w)
		}
		if i < prevIdx {
			t.Fatalf("index not monotonic at %d", v)
		}
		prevIdx = i
		if i >= nBuckets {
			t.Fatalf("index %d out of range for %d", i, v)
		}
	}
	for i := 0; i < nBuckets-1; i++ {
		lo, w := bounds(i)
		lo2, _ := bounds(i + 1)
		if lo+w != lo2 {
			t.Fatalf("gap between bucket %d and %d", i, i+1)
		}
	}
}

func TestQuantilesWithinPrecision(t *testing.T) {
	h := New()
	for i := 1; i <= 100000; i++ {
		h.Record(int64(i) * 1000) // 1µs .. 100ms
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}} {
		got := h.Quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d > 0.02 || d < -0.02 {
			t.Errorf("q%.3f = %v, want about %v", c.q, got, c.want)
		}
	}
	o := New()
	o.Record(int64(time.Second))
	h.Merge(o)
	if h.Count() != 100001 || h.Max() != time.Second {
		t.Fatalf("merge: count %d max %v", h.Count(), h.Max())
	}
}
