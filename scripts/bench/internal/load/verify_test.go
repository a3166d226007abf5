package load

import (
	"testing"
)

func msg(pub uint32, seq uint64) []byte {
	p := make([]byte, PayloadSize)
	FillPayload(p, pub, seq, 1000)
	return p
}

func TestPayloadRoundTrip(t *testing.T) {
	p := msg(7, 123456789)
	pub, seq, ts, ok := ParsePayload(p)
	if !ok || pub != 7 || seq != 123456789 || ts != 1000 {
		t.Fatalf("got %d %d %d %v", pub, seq, ts, ok)
	}
}

func TestInOrderStreamFromTwoPublishersVerifies(t *testing.T) {
	v := NewVerifier(2)
	for s := uint64(0); s < 1000; s++ {
		v.Check(msg(0, s), 2000)
		v.Check(msg(1, s), 2500)
	}
	if v.Unique != 2000 || v.Dups+v.Reordered+v.Corrupt+v.Misrouted != 0 {
		t.Fatalf("clean stream: %+v", *v)
	}
	if v.Latency.Count() != 2000 || v.Latency.Quantile(0.5) < 900 || v.Latency.Quantile(0.99) > 1600 {
		t.Fatalf("latency p50 %v p99 %v", v.Latency.Quantile(0.5), v.Latency.Quantile(0.99))
	}
}

func TestDuplicateIsDetected(t *testing.T) {
	v := NewVerifier(1)
	v.Check(msg(0, 0), 0)
	v.Check(msg(0, 1), 0)
	v.Check(msg(0, 1), 0)
	v.Check(msg(0, 0), 0)
	if v.Unique != 2 || v.Dups != 2 || v.Reordered != 0 {
		t.Fatalf("%+v", *v)
	}
}

func TestReorderingIsDetected(t *testing.T) {
	v := NewVerifier(1)
	for _, s := range []uint64{0, 2, 1, 3, 5, 4} {
		v.Check(msg(0, s), 0)
	}
	if v.Unique != 6 || v.Reordered != 2 || v.Dups != 0 {
		t.Fatalf("%+v", *v)
	}
}

func TestGapIsLossNotReordering(t *testing.T) {
	v := NewVerifier(1)
	for _, s := range []uint64{0, 1, 5, 6} {
		v.Check(msg(0, s), 0)
	}
	if v.Unique != 4 || v.Reordered != 0 {
		t.Fatalf("%+v", *v)
	}
}

func TestOrderIsPerPublisher(t *testing.T) {
	v := NewVerifier(2)
	v.Check(msg(1, 10), 0)
	v.Check(msg(0, 0), 0) // earlier seq of another publisher: fine
	v.Check(msg(0, 1), 0)
	if v.Reordered != 0 {
		t.Fatalf("%+v", *v)
	}
}

func TestCorruptionIsDetected(t *testing.T) {
	v := NewVerifier(2)
	for i := 0; i < PayloadSize; i++ {
		p := msg(1, 42)
		p[i] ^= 0x01
		v.Check(p, 0)
	}
	v.Check(msg(0, 1)[:PayloadSize-1], 0) // truncated
	long := append(msg(0, 2), 0)
	v.Check(long, 0)
	v.Check(msg(5, 1), 0) // unknown publisher
	if v.Corrupt != PayloadSize+3 || v.Unique != 0 {
		t.Fatalf("corrupt %d unique %d", v.Corrupt, v.Unique)
	}
}

func TestMisroutedIsDetected(t *testing.T) {
	v := NewVerifier(1)
	v.Owns = func(pub uint32, seq uint64) bool { return seq%2 == 0 }
	for s := uint64(0); s < 10; s++ {
		v.Check(msg(0, s), 0)
	}
	if v.Unique != 5 || v.Misrouted != 5 || v.Reordered != 0 {
		t.Fatalf("%+v", *v)
	}
}

func TestLargeSequenceNumbersGrowTheBitset(t *testing.T) {
	v := NewVerifier(1)
	v.Check(msg(0, 5_000_000), 0)
	v.Check(msg(0, 5_000_000), 0)
	v.Check(msg(0, 3), 0)
	if v.Unique != 2 || v.Dups != 1 || v.Reordered != 1 {
		t.Fatalf("%+v", *v)
	}
}
