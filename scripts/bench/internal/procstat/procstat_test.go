package procstat

import (
	"encoding/binary"
	"os"
	"testing"
)

func TestParseStatCountsFieldsAfterTheName(t *testing.T) {
	// A command name with spaces and a ')' must not shift the fields.
	line := "4242 (my) broker x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 517 203 0 0 20 0 9 0 12345 123456789 2048 18446744073709551615\n"
	u, s, err := ParseStat([]byte(line))
	if err != nil || u != 517 || s != 203 {
		t.Fatalf("got utime %d stime %d err %v", u, s, err)
	}
}

func TestParseStatRejectsGarbage(t *testing.T) {
	for _, in := range []string{"", "123 (x", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 1 0"} {
		if _, _, err := ParseStat([]byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestParseStatusReadsRSSAndHWMInBytes(t *testing.T) {
	in := "Name:\tmosquitto\nVmPeak:\t   20000 kB\nVmHWM:\t    8192 kB\nVmRSS:\t    6144 kB\nThreads:\t1\n"
	rss, hwm, err := ParseStatus([]byte(in))
	if err != nil || rss != 6144*1024 || hwm != 8192*1024 {
		t.Fatalf("rss %d hwm %d err %v", rss, hwm, err)
	}
}

func TestParseStatusOfZombieIsAnError(t *testing.T) {
	if _, _, err := ParseStatus([]byte("Name:\tx\nState:\tZ (zombie)\n")); err == nil {
		t.Fatal("no error")
	}
}

func TestParseAuxvFindsClockTicks(t *testing.T) {
	var b []byte
	for _, kv := range [][2]uint64{{6, 4096}, {17, 250}, {0, 0}} {
		b = binary.NativeEndian.AppendUint64(b, kv[0])
		b = binary.NativeEndian.AppendUint64(b, kv[1])
	}
	if v, ok := ParseAuxv(b); !ok || v != 250 {
		t.Fatalf("got %d %v", v, ok)
	}
	if _, ok := ParseAuxv(b[:16]); ok {
		t.Fatal("found AT_CLKTCK where there is none")
	}
}

func TestReadSelf(t *testing.T) {
	s, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS == 0 || s.HWM < s.RSS {
		t.Fatalf("implausible sample %+v", s)
	}
	if ClockTicks() == 0 {
		t.Fatal("zero clock ticks")
	}
}

func TestParseCPUTotalExcludesIdleAndIowaitAndGuest(t *testing.T) {
	in := "cpu  100 5 50 1000 20 1 2 3 40 0\ncpu0 50 2 25 500 10 0 1 1 20 0\n"
	busy, total, err := ParseCPUTotal([]byte(in))
	if err != nil || busy != 100+5+50+1+2+3 || total != busy+1000+20 {
		t.Fatalf("busy %d total %d err %v", busy, total, err)
	}
	if _, _, err := ParseCPUTotal([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("no error for a file without a cpu line")
	}
}
