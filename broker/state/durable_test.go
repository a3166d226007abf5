package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

func TestDurableRoundTripsEveryOpKind(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	d := open(t, dir, DurableOptions{})
	if s := load(t, d); len(s.Messages) != 0 || s.NextID != 1 {
		t.Fatalf("new store: %d messages, NextID %d", len(s.Messages), s.NextID)
	}
	sess := &Session{ClientID: "dev-1", Version: 5, ExpiryInterval: 0xFFFFFFFF, DisconnectedAt: ts(5),
		Subscriptions: []Subscription{
			{Filter: "$share/g/a/+", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, ID: 268435455},
			{Filter: "b/#", QoS: 0},
		}}
	will := &Will{ClientID: "dev-1", Message: *fullMessage(0), Due: ts(99)}
	will.Message.Topic = "dev/1/status"
	batches := []*Batch{
		{Ops: []Op{
			{Kind: OpPutSession, ClientID: "dev-1", Session: sess},
			{Kind: OpPutSession, ClientID: "gone", Session: &Session{ClientID: "gone", Version: 4}},
			{Kind: OpPutMessage, MessageID: 1, Message: fullMessage(1)},
			{Kind: OpPutMessage, MessageID: 2, Message: plainMessage(2, 0)},
			{Kind: OpPutMessage, MessageID: 3, Message: plainMessage(3, 10)},
			{Kind: OpSetRetained, Topic: "r/1", MessageID: 1},
			{Kind: OpSetRetained, Topic: "r/2", MessageID: 3},
			{Kind: OpEnqueue, ClientID: "dev-1", Outbound: &Outbound{Seq: 1, MessageID: 1, QoS: 1, SubIDs: []uint32{1, 268435455}, RetainFlag: true}},
			{Kind: OpEnqueue, ClientID: "dev-1", Outbound: &Outbound{Seq: 2, MessageID: 2, QoS: 2}},
			{Kind: OpEnqueue, ClientID: "dev-1", Outbound: &Outbound{Seq: 3, MessageID: 3, QoS: 2}},
			{Kind: OpEnqueue, ClientID: "gone", Outbound: &Outbound{Seq: 1, MessageID: 2, QoS: 1}},
			{Kind: OpPutInbound, ClientID: "dev-1", PacketID: 65535},
			{Kind: OpPutInbound, ClientID: "dev-1", PacketID: 7},
			{Kind: OpPutInbound, ClientID: "gone", PacketID: 9},
			{Kind: OpPutWill, ClientID: "dev-1", Will: will},
			{Kind: OpPutWill, ClientID: "gone", Will: &Will{ClientID: "gone", Message: *plainMessage(0, 1)}},
		}},
		{Ops: []Op{
			{Kind: OpUpdateOutbound, ClientID: "dev-1", Outbound: &Outbound{Seq: 1, Phase: Sent, PacketID: 42}},
			{Kind: OpUpdateOutbound, ClientID: "dev-1", Outbound: &Outbound{Seq: 2, Phase: Released, PacketID: 43}},
			{Kind: OpDequeue, ClientID: "dev-1", Seq: 3},
			{Kind: OpClearRetained, Topic: "r/2"},
			{Kind: OpDeleteInbound, ClientID: "dev-1", PacketID: 7},
			{Kind: OpDeleteSession, ClientID: "gone"},
			{Kind: OpDeleteWill, ClientID: "gone"},
		}},
		{}, // an empty batch is committed too
	}
	want := newModel()
	for i, b := range batches {
		if err := commitWait(d, b); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		want.apply(b)
	}
	d, got := reopen(t, d, DurableOptions{})
	defer mustClose(t, d)
	if err := sameState(t, got, want.s); err != nil {
		t.Fatal(err)
	}
	// Spot checks that do not depend on the model.
	if got.NextID != 4 {
		t.Errorf("NextID = %d, want 4", got.NextID)
	}
	if _, ok := got.Messages[3]; ok {
		t.Errorf("message 3 kept after its queue entry and retained slot went")
	}
	if q := got.Queues["dev-1"]; len(q) != 2 || q[0].Phase != Sent || q[0].PacketID != 42 || q[1].Phase != Released {
		t.Errorf("dev-1 queue = %+v", q)
	}
	if len(got.Wills) != 1 || !got.Wills[0].Due.Equal(ts(99)) || !got.Wills[0].Message.Expiry.Equal(ts(3600)) {
		t.Errorf("wills = %+v", got.Wills)
	}
	if m := got.Messages[1]; m == nil || !m.Expiry.Equal(ts(3601)) || !m.Created.Equal(ts(1)) {
		t.Errorf("message 1 = %+v", m)
	}
}

func TestDurableRandomBatchesMatchModel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	opts := DurableOptions{CompactBytes: 16 << 10}
	d := open(t, dir, opts)
	g, want := newGen(7), newModel()
	for round := range 6 {
		var bs []*Batch
		for range 300 {
			bs = append(bs, g.batch())
		}
		for i, err := range commitAll(d, bs) {
			if err != nil {
				t.Fatalf("round %d batch %d: %v", round, i, err)
			}
		}
		for _, b := range bs {
			want.apply(b)
		}
		var got *Snapshot
		d, got = reopen(t, d, opts)
		if err := sameState(t, got, want.s); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	mustClose(t, d)
}

func TestDurableKeepsMessageWhileReferenced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	d := open(t, dir, DurableOptions{})
	step := func(ops ...Op) *Snapshot {
		t.Helper()
		if err := commitWait(d, &Batch{Ops: ops}); err != nil {
			t.Fatal(err)
		}
		var s *Snapshot
		d, s = reopen(t, d, DurableOptions{})
		return s
	}
	has := func(s *Snapshot, id uint64) bool { return s.Messages[id] != nil }

	s := step(Op{Kind: OpPutMessage, Message: plainMessage(1, 8)},
		Op{Kind: OpEnqueue, ClientID: "a", Outbound: &Outbound{Seq: 1, MessageID: 1}},
		Op{Kind: OpEnqueue, ClientID: "b", Outbound: &Outbound{Seq: 1, MessageID: 1}},
		Op{Kind: OpSetRetained, Topic: "t", MessageID: 1})
	if !has(s, 1) {
		t.Fatal("message with three references missing")
	}
	if s = step(Op{Kind: OpDequeue, ClientID: "a", Seq: 1}); !has(s, 1) {
		t.Fatal("message dropped while queue b and retained t refer to it")
	}
	if s = step(Op{Kind: OpDeleteSession, ClientID: "b"}); !has(s, 1) {
		t.Fatal("message dropped while retained t refers to it")
	}
	if s = step(Op{Kind: OpClearRetained, Topic: "t"}); has(s, 1) {
		t.Fatal("message kept with no reference")
	}
	// Replacing a retained message releases the old one.
	s = step(Op{Kind: OpPutMessage, Message: plainMessage(2, 8)}, Op{Kind: OpSetRetained, Topic: "t", MessageID: 2},
		Op{Kind: OpPutMessage, Message: plainMessage(3, 8)}, Op{Kind: OpSetRetained, Topic: "t", MessageID: 3})
	if has(s, 2) || !has(s, 3) || s.Retained["t"] != 3 {
		t.Fatalf("after replacing retained: messages %v retained %v", msgIDs(s.Messages), s.Retained)
	}
	// A message stored with nothing referring to it is not kept, but its id
	// is never handed out again.
	if s = step(Op{Kind: OpPutMessage, Message: plainMessage(4, 8)}); has(s, 4) || s.NextID != 5 {
		t.Fatalf("unreferenced message: kept %v, NextID %d", has(s, 4), s.NextID)
	}
	if st := d.Stats(); st.LiveBytes <= 0 {
		t.Errorf("LiveBytes = %d with a retained message", st.LiveBytes)
	}
	if s = step(Op{Kind: OpClearRetained, Topic: "t"}); len(s.Messages) != 0 {
		t.Fatalf("messages left: %v", msgIDs(s.Messages))
	}
	if st := d.Stats(); st.LiveBytes != 0 {
		t.Errorf("LiveBytes = %d with nothing stored", st.LiveBytes)
	}
	mustClose(t, d)
}

// writeHistory commits batches one by one (so that some records hold one
// batch) and in concurrent bursts (so that others hold several), then returns
// the log's bytes and, for each record end offset, how many batches it ends.
func writeHistory(t *testing.T, dir string, n int) (log []byte, bs []*Batch, ends map[int]int) {
	t.Helper()
	d := open(t, dir, DurableOptions{})
	g := newGen(42)
	for len(bs) < n {
		burst := 1 + len(bs)%4
		var group []*Batch
		for range burst {
			group = append(group, g.batch())
		}
		for i, err := range commitAll(d, group) {
			if err != nil {
				t.Fatalf("batch %d: %v", len(bs)+i, err)
			}
		}
		bs = append(bs, group...)
	}
	mustClose(t, d)
	log, err := os.ReadFile(filepath.Join(dir, logName(1)))
	if err != nil {
		t.Fatal(err)
	}
	ends = map[int]int{}
	count := 0
	end, stop := scanRecords(log, headerSize, func(p []byte) error {
		dd := decoder{b: p}
		for !dd.done() {
			nops := dd.uvarint()
			for range nops {
				dd.op()
			}
			count++
		}
		return dd.err
	})
	if stop != nil || end != len(log) || count != len(bs) {
		t.Fatalf("history: %d batches in %d records, scan stopped at %d of %d: %v", count, len(ends), end, len(log), stop)
	}
	// Again, now noting where each record ends.
	count = 0
	off := headerSize
	scanRecords(log, headerSize, func(p []byte) error {
		dd := decoder{b: p}
		for !dd.done() {
			nops := dd.uvarint()
			for range nops {
				dd.op()
			}
			count++
		}
		off += recordHeader + len(p)
		ends[off] = count
		return nil
	})
	return log, bs, ends
}

func TestDurableTruncatedAtEveryOffsetLoadsAPrefix(t *testing.T) {
	base := t.TempDir()
	log, bs, ends := writeHistory(t, filepath.Join(base, "orig"), 24)
	t.Logf("log of %d bytes, %d batches in %d records", len(log), len(bs), len(ends))

	// States after each batch count.
	prefixes := []*Snapshot{}
	m := newModel()
	prefixes = append(prefixes, normalize(m.s))
	for _, b := range bs {
		m.apply(b)
		prefixes = append(prefixes, normalize(m.s))
	}
	want := 0 // batches in the records wholly before offset
	for off := headerSize; off <= len(log); off++ {
		if c, ok := ends[off]; ok {
			want = c
		}
		dir := filepath.Join(base, fmt.Sprintf("cut-%d", off))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, logName(1)), log[:off], 0o600); err != nil {
			t.Fatal(err)
		}
		d := open(t, dir, DurableOptions{})
		if bad, why := d.Damaged(); bad {
			t.Fatalf("cut at %d: reported damaged (%s); a torn tail is normal", off, why)
		}
		if err := sameState(t, load(t, d), prefixes[want]); err != nil {
			t.Fatalf("cut at %d: want the first %d batches: %v", off, want, err)
		}
		// Every so often, check that the store goes on correctly after the cut.
		if off%17 == 0 {
			extra := &Batch{Ops: []Op{{Kind: OpPutInbound, ClientID: "after-cut", PacketID: 1}}}
			if err := commitWait(d, extra); err != nil {
				t.Fatalf("cut at %d: commit after the cut: %v", off, err)
			}
			var got *Snapshot
			d, got = reopen(t, d, DurableOptions{})
			wantAfter := *prefixes[want]
			wantAfter.Inbound = map[string][]uint16{"after-cut": {1}}
			for k, v := range prefixes[want].Inbound {
				wantAfter.Inbound[k] = v
			}
			if err := sameState(t, got, &wantAfter); err != nil {
				t.Fatalf("cut at %d, then one more batch: %v", off, err)
			}
		}
		mustClose(t, d)
		os.RemoveAll(dir)
	}
}

func TestDurableGarbageTailIsCutNotDamage(t *testing.T) {
	base := t.TempDir()
	log, bs, _ := writeHistory(t, filepath.Join(base, "orig"), 8)
	want := newModel()
	for _, b := range bs {
		want.apply(b)
	}
	r := rand.New(rand.NewPCG(3, 3))
	tails := map[string][]byte{
		"zeros":       make([]byte, 4096), // extended but never written
		"random":      randBytes(r, 300),
		"huge length": {0xff, 0xff, 0xff, 0x7f, 1, 2, 3, 4, 5},
		// A torn record whose payload (a message, say) holds bytes that
		// are themselves a valid record: still only a torn tail.
		"torn record holding a record": tornRecordHolding(log[headerSize : headerSize+recordHeader+int(binary.LittleEndian.Uint32(log[headerSize:]))]),
	}
	for name, tail := range tails {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(base, strings.ReplaceAll(name, " ", "-"))
			os.MkdirAll(dir, 0o700)
			os.WriteFile(filepath.Join(dir, logName(1)), append(bytes.Clone(log), tail...), 0o600)
			d := open(t, dir, DurableOptions{})
			defer mustClose(t, d)
			if bad, why := d.Damaged(); bad {
				t.Fatalf("damaged: %s", why)
			}
			if err := sameState(t, load(t, d), want.s); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// tornRecordHolding is the start of a record, cut off by the end of the file,
// whose payload begins with inner.
func tornRecordHolding(inner []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(inner)+100))
	b = binary.LittleEndian.AppendUint32(b, 0)
	return append(b, inner...)
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

func TestDurableDamagedStoreIsMovedAsideAndStartsEmpty(t *testing.T) {
	base := t.TempDir()
	log, _, _ := writeHistory(t, filepath.Join(base, "orig"), 8)
	r := rand.New(rand.NewPCG(9, 9))
	flip := func(off int) []byte { b := bytes.Clone(log); b[off] ^= 0x40; return b }
	wrongVersion := bytes.Clone(log)
	wrongVersion[8] = 9 // with a valid header checksum
	binary.LittleEndian.PutUint32(wrongVersion[28:], crc32.Checksum(wrongVersion[:28], castagnoli))
	cases := map[string]map[string][]byte{
		"zeroed":              {logName(1): make([]byte, len(log))},
		"random bytes":        {logName(1): randBytes(r, len(log))},
		"wrong magic":         {logName(1): flip(0)},
		"header checksum":     {logName(1): flip(14)},
		"wrong version":       {logName(1): wrongVersion},
		"header cut":          {logName(1): log[:headerSize-5]},
		"empty log file":      {logName(1): {}},
		"log chain gap":       {logName(1): log, logName(3): log},
		"corrupt old log":     {logName(1): flip(len(log) - 3), logName(2): nextLog(2, len(log))},
		"next log overstates": {logName(1): log, logName(2): nextLog(2, len(log)+1)},
		"snapshot only":       {snapName(5): fileHeader{kind: kindSnapshot, seq: 5}.append(nil)},
		"incomplete snapshot": {snapName(2): fileHeader{kind: kindSnapshot, seq: 2}.append(nil), logName(2): nextLog(2, 0)},
		"bad file name":       {"log-zz": log},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(base, strings.ReplaceAll(name, " ", "-"), "store")
			os.MkdirAll(dir, 0o700)
			for f, data := range files {
				os.WriteFile(filepath.Join(dir, f), data, 0o600)
			}
			d := open(t, dir, DurableOptions{})
			bad, why := d.Damaged()
			if !bad {
				mustClose(t, d)
				t.Fatal("not reported damaged")
			}
			t.Logf("damaged: %s", why)
			if s := load(t, d); len(s.Messages)+len(s.Sessions)+len(s.Queues) != 0 {
				t.Errorf("damaged store did not start empty")
			}
			aside, _ := filepath.Glob(dir + ".damaged-*")
			if len(aside) != 1 {
				t.Fatalf("moved aside: %v", aside)
			}
			for f, data := range files {
				got, err := os.ReadFile(filepath.Join(aside[0], f))
				if err != nil || !bytes.Equal(got, data) {
					t.Errorf("%s not kept as it was in %s: %v", f, aside[0], err)
				}
			}
			if !strings.Contains(why, aside[0]) {
				t.Errorf("reason %q does not say where the store went", why)
			}
			// The new store works and is not damaged the next time.
			if err := commitWait(d, &Batch{Ops: []Op{{Kind: OpPutInbound, ClientID: "x", PacketID: 1}}}); err != nil {
				t.Fatal(err)
			}
			d, s := reopen(t, d, DurableOptions{})
			defer mustClose(t, d)
			if len(s.Inbound["x"]) != 1 {
				t.Errorf("batch after the restart lost: %v", s.Inbound)
			}
		})
	}
}

// TestDurableDamageInsideLastLogKeepsWhatPrecedesIt: a bad record in the
// middle of the last log with valid records after it (damage, or a power cut
// that persisted the last write's pages out of order) is not a silent tear:
// the store keeps every batch before the damage, reports the damage, keeps a
// copy of the log as found, and goes on working.
func TestDurableDamageInsideLastLogKeepsWhatPrecedesIt(t *testing.T) {
	base := t.TempDir()
	log, _, _ := writeHistory(t, filepath.Join(base, "orig"), 8)
	// Record starts in the log.
	var starts []int
	for off := headerSize; off+recordHeader <= len(log); {
		starts = append(starts, off)
		off += recordHeader + int(binary.LittleEndian.Uint32(log[off:]))
	}
	if len(starts) < 4 {
		t.Fatalf("history has %d records, want at least 4", len(starts))
	}
	at := starts[len(starts)/2]
	flip := bytes.Clone(log)
	flip[at+recordHeader+1] ^= 0x40
	cases := map[string][]byte{
		"checksum": flip,
		"zeros":    zeroed(log, at, recordHeader+2),
	}
	for name, damaged := range cases {
		t.Run(name, func(t *testing.T) {
			// What the store must come back with: the log up to the damage.
			wantDir := filepath.Join(base, name+"-want")
			os.MkdirAll(wantDir, 0o700)
			os.WriteFile(filepath.Join(wantDir, logName(1)), log[:at], 0o600)
			w := open(t, wantDir, DurableOptions{})
			want := load(t, w)
			mustClose(t, w)
			if len(want.Messages)+len(want.Sessions)+len(want.Queues) == 0 {
				t.Fatal("nothing precedes the damage; the test would prove nothing")
			}

			dir := filepath.Join(base, name, "store")
			os.MkdirAll(dir, 0o700)
			os.WriteFile(filepath.Join(dir, logName(1)), damaged, 0o600)
			d := open(t, dir, DurableOptions{})
			bad, why := d.Damaged()
			if !bad {
				mustClose(t, d)
				t.Fatal("damage inside the last log not reported")
			}
			t.Logf("damaged: %s", why)
			if err := sameState(t, load(t, d), want); err != nil {
				mustClose(t, d)
				t.Fatalf("store after the damage: %v", err)
			}
			aside, _ := filepath.Glob(dir + ".damaged-*")
			if len(aside) != 1 {
				mustClose(t, d)
				t.Fatalf("copies aside: %v", aside)
			}
			if got, err := os.ReadFile(filepath.Join(aside[0], logName(1))); err != nil || !bytes.Equal(got, damaged) {
				t.Errorf("the log as found is not kept in %s: %v", aside[0], err)
			}
			if !strings.Contains(why, aside[0]) {
				t.Errorf("reason %q does not say where the copy is", why)
			}
			// The store goes on: a new batch survives a reopen, which no
			// longer reports damage.
			if err := commitWait(d, &Batch{Ops: []Op{{Kind: OpPutInbound, ClientID: "after", PacketID: 7}}}); err != nil {
				t.Fatal(err)
			}
			mustClose(t, d)
			d = open(t, dir, DurableOptions{})
			defer mustClose(t, d)
			if bad, why := d.Damaged(); bad {
				t.Errorf("reopened store reported damaged again: %s", why)
			}
			s := load(t, d)
			if !slices.Equal(s.Inbound["after"], []uint16{7}) {
				t.Errorf("the batch committed after the cut did not survive a reopen: inbound %v", s.Inbound["after"])
			}
			delete(s.Inbound, "after")
			if err := sameState(t, s, want); err != nil {
				t.Errorf("reopened store: %v", err)
			}
		})
	}
}

// zeroed is a copy of b with n bytes from off on set to zero.
func zeroed(b []byte, off, n int) []byte {
	b = bytes.Clone(b)
	clear(b[off : off+n])
	return b
}

// nextLog is the header of a log saying the previous one holds prevLen bytes.
func nextLog(seq uint64, prevLen int) []byte {
	return fileHeader{kind: kindLog, seq: seq, prevLen: uint64(prevLen)}.append(nil)
}

func TestDurableOpenFailsOnlyWithoutADirectory(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := OpenDurable(filepath.Join(file, "store"), DurableOptions{}); err == nil {
		t.Fatal("OpenDurable under a regular file succeeded")
	}
	dir := filepath.Join(base, "store")
	d := open(t, dir, DurableOptions{})
	if _, err := OpenDurable(dir, DurableOptions{}); err == nil {
		t.Error("second OpenDurable of a store in use succeeded")
	}
	mustClose(t, d)
	mustClose(t, open(t, dir, DurableOptions{}))
}

// faults injects errno on the next n write or fsync calls of kind op.
type faults struct {
	mu    sync.Mutex
	op    FaultOp
	n     int
	errno error
	hits  int
}

func (f *faults) set(op FaultOp, n int, errno error) {
	f.mu.Lock()
	f.op, f.n, f.errno = op, n, errno
	f.mu.Unlock()
}

func (f *faults) hook(op FaultOp) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if op == f.op && f.n > 0 {
		f.n--
		f.hits++
		return f.errno
	}
	return nil
}

func TestDurableDiskErrorsFailBatchesAndRecover(t *testing.T) {
	for _, tc := range []struct {
		op    FaultOp
		errno syscall.Errno
		n     int
	}{
		{FaultWrite, syscall.ENOSPC, 1},
		{FaultWrite, syscall.EIO, 3}, // also fails the rolls that follow
		{FaultSync, syscall.EIO, 1},
		{FaultSync, syscall.ENOSPC, 4},
	} {
		t.Run(fmt.Sprintf("%v %v x%d", tc.op, tc.errno, tc.n), func(t *testing.T) {
			f := &faults{}
			opts := DurableOptions{Fault: f.hook}
			d := open(t, filepath.Join(t.TempDir(), "store"), opts)
			want := newModel()
			g := newGen(11)
			ok := func() {
				t.Helper()
				b := g.batch()
				if err := commitWait(d, b); err != nil {
					t.Fatalf("commit with a healthy disk: %v", err)
				}
				want.apply(b)
			}
			for range 5 {
				ok()
			}
			f.set(tc.op, tc.n, tc.errno)
			failed := 0
			for try := 0; failed < tc.n && try < 20; try++ {
				b := g.batch()
				err := commitWait(d, b)
				switch {
				case err == nil:
					want.apply(b)
				case errors.Is(err, tc.errno):
					failed++
				default:
					t.Fatalf("error %v does not wrap %v", err, tc.errno)
				}
			}
			if failed == 0 {
				t.Fatal("no batch failed")
			}
			for range 5 {
				ok()
			}
			if st := d.Stats(); st.WriteErrors < uint64(failed) {
				t.Errorf("WriteErrors = %d, %d batches failed", st.WriteErrors, failed)
			}
			d, got := reopen(t, d, opts)
			defer mustClose(t, d)
			if err := sameState(t, got, want.s); err != nil {
				t.Fatalf("after reopening, want exactly the batches that succeeded: %v", err)
			}
		})
	}
}

func TestDurableQuota(t *testing.T) {
	opts := DurableOptions{MaxBytes: 4096}
	d := open(t, filepath.Join(t.TempDir(), "store"), opts)
	var rejected error
	id := uint64(0)
	for rejected == nil && id < 1000 {
		id++
		rejected = commitWait(d, &Batch{Ops: []Op{
			{Kind: OpPutMessage, Message: plainMessage(id, 100)},
			{Kind: OpEnqueue, ClientID: "c", Outbound: &Outbound{Seq: id, MessageID: id, QoS: 1}},
		}})
	}
	if !errors.Is(rejected, ErrQuotaExceeded) {
		t.Fatalf("after %d batches: %v, want ErrQuotaExceeded", id, rejected)
	}
	st := d.Stats()
	if st.QuotaRejects != 1 || st.LiveBytes > opts.MaxBytes {
		t.Errorf("QuotaRejects %d, LiveBytes %d of %d", st.QuotaRejects, st.LiveBytes, opts.MaxBytes)
	}
	// Removing is never refused, and makes room.
	if err := commitWait(d, &Batch{Ops: []Op{{Kind: OpDequeue, ClientID: "c", Seq: 1}, {Kind: OpDequeue, ClientID: "c", Seq: 2}}}); err != nil {
		t.Fatalf("dequeue at the quota: %v", err)
	}
	if err := commitWait(d, &Batch{Ops: []Op{
		{Kind: OpPutMessage, Message: plainMessage(id, 100)},
		{Kind: OpEnqueue, ClientID: "c", Outbound: &Outbound{Seq: id, MessageID: id, QoS: 1}},
	}}); err != nil {
		t.Fatalf("after making room: %v", err)
	}
	d, s := reopen(t, d, opts)
	defer mustClose(t, d)
	if n := len(s.Queues["c"]); n != int(id)-2 {
		t.Errorf("queue holds %d, want %d", n, id-2)
	}
}

func TestDurableCompactionKeepsLiveStateAndShrinksFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	opts := DurableOptions{CompactBytes: 32 << 10}
	d := open(t, dir, opts)
	want := newModel()
	// Retained churn on a few topics, and messages queued then acknowledged:
	// the live state stays small while the log grows.
	id := uint64(0)
	for round := range 400 {
		var bs []*Batch
		for range 4 {
			id++
			bs = append(bs, &Batch{Ops: []Op{
				{Kind: OpPutMessage, Message: plainMessage(id, 200)},
				{Kind: OpSetRetained, Topic: fmt.Sprintf("r/%d", id%5), MessageID: id},
				{Kind: OpEnqueue, ClientID: "c", Outbound: &Outbound{Seq: id, MessageID: id, QoS: 1}},
			}})
			if id > 10 {
				bs = append(bs, &Batch{Ops: []Op{{Kind: OpDequeue, ClientID: "c", Seq: id - 10}}})
			}
		}
		if round%50 == 0 {
			bs = append(bs, &Batch{Ops: []Op{{Kind: OpPutSession, ClientID: "c", Session: &Session{ClientID: "c", Version: 4, DisconnectedAt: ts(int64(round))}}}})
		}
		for i, err := range commitAll(d, bs) {
			if err != nil {
				t.Fatalf("round %d batch %d: %v", round, i, err)
			}
		}
		for _, b := range bs {
			want.apply(b)
		}
	}
	st := d.Stats()
	if st.Compactions == 0 {
		t.Fatalf("no compaction after %d bytes of log", st.BytesWritten)
	}
	d, got := reopen(t, d, opts)
	if err := sameState(t, got, want.s); err != nil {
		t.Fatal(err)
	}
	size := dirSize(t, dir)
	t.Logf("written %d bytes, %d compactions; files %d bytes, live %d bytes", st.BytesWritten, st.Compactions, size, st.LiveBytes)
	if size > st.LiveBytes*3+2*opts.CompactBytes {
		t.Errorf("files hold %d bytes for %d live bytes (CompactBytes %d)", size, st.LiveBytes, opts.CompactBytes)
	}
	if size*4 > int64(st.BytesWritten) {
		t.Errorf("files hold %d of %d bytes written: compaction did not shrink them", size, st.BytesWritten)
	}
	mustClose(t, d)
}

func dirSize(t testing.TB, dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}

func TestDurableCloseFlushesPendingBatches(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	d := open(t, dir, DurableOptions{})
	const n = 500
	var acked atomic.Int64
	results := make([]error, n)
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		d.Commit(&Batch{Ops: []Op{{Kind: OpPutInbound, ClientID: fmt.Sprint(i), PacketID: 1}}}, func(err error) {
			results[i] = err
			if err == nil {
				acked.Add(1)
			}
			wg.Done()
		})
	}
	mustClose(t, d)
	wg.Wait()
	if acked.Load() != n {
		t.Errorf("%d of %d batches committed before Close acknowledged", acked.Load(), n)
	}
	if err := commitWait(d, &Batch{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close: %v", err)
	}
	d = open(t, dir, DurableOptions{})
	defer mustClose(t, d)
	if s := load(t, d); len(s.Inbound) != n {
		t.Errorf("%d of %d batches found after Close", len(s.Inbound), n)
	}
}

func TestDurableCommitFailsFastWhenTheQueueIsFull(t *testing.T) {
	release := make(chan struct{})
	var blocked atomic.Bool
	opts := DurableOptions{MaxPending: 4, Fault: func(op FaultOp) error {
		if op == FaultSync && blocked.Load() {
			<-release // a disk that does not answer
		}
		return nil
	}}
	d := open(t, filepath.Join(t.TempDir(), "store"), opts)
	blocked.Store(true)
	var wg sync.WaitGroup
	var busy, ok atomic.Int64
	for range 50 {
		wg.Add(1)
		d.Commit(&Batch{}, func(err error) {
			switch {
			case errors.Is(err, ErrBusy):
				busy.Add(1)
			case err == nil:
				ok.Add(1)
			}
			wg.Done()
		})
	}
	// Commit returned 50 times while the writer is stuck: it never blocked.
	blocked.Store(false)
	close(release)
	wg.Wait()
	if busy.Load() == 0 || busy.Load()+ok.Load() != 50 {
		t.Errorf("busy %d, ok %d of 50", busy.Load(), ok.Load())
	}
	if st := d.Stats(); st.BusyRejects != uint64(busy.Load()) {
		t.Errorf("BusyRejects %d, saw %d", st.BusyRejects, busy.Load())
	}
	mustClose(t, d)
}

func TestDurableDoneMayCommitAgain(t *testing.T) {
	d := open(t, filepath.Join(t.TempDir(), "store"), DurableOptions{MaxPending: 2})
	finished := make(chan error, 1)
	var chain func(n int) func(error)
	chain = func(n int) func(error) {
		return func(err error) {
			if err != nil || n == 0 {
				finished <- err
				return
			}
			d.Commit(&Batch{Ops: []Op{{Kind: OpPutInbound, ClientID: "c", PacketID: uint16(n)}}}, chain(n-1))
		}
	}
	d.Commit(&Batch{}, chain(100))
	if err := <-finished; err != nil {
		t.Fatal(err)
	}
	mustClose(t, d)
}

func TestDurableLargeGroupsSplitIntoRecords(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	d := open(t, dir, DurableOptions{MaxBytes: -1})
	want := newModel()
	var bs []*Batch
	for id := uint64(1); id <= 12; id++ {
		bs = append(bs, &Batch{Ops: []Op{
			{Kind: OpPutMessage, Message: plainMessage(id, 300<<10)},
			{Kind: OpSetRetained, Topic: fmt.Sprintf("big/%d", id), MessageID: id},
		}})
	}
	for i, err := range commitAll(d, bs) {
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		want.apply(bs[i])
	}
	d, got := reopen(t, d, DurableOptions{MaxBytes: -1})
	defer mustClose(t, d)
	if err := sameState(t, got, want.s); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		max int64
		ok  bool
	}{{0, true}, {1 << 20, true}, {-1, false}, {100, false}} {
		c := Config{MaxBytes: tc.max}
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("max_bytes %d: %v", tc.max, err)
		}
		if tc.ok && c.Options().MaxBytes != tc.max {
			t.Errorf("max_bytes %d: Options().MaxBytes = %d", tc.max, c.Options().MaxBytes)
		}
	}
}

// TestDurableRollFailingAfterItsRenameKeepsAcknowledgedBatches: a new log is
// renamed into place before the directory fsync; when that fsync fails, the
// new log's header (which says how much of the current log counts) stays on
// disk. No batch may then be acknowledged in the current log beyond that
// length: recovery would ignore it.
func TestDurableRollFailingAfterItsRenameKeepsAcknowledgedBatches(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	var (
		mu    sync.Mutex
		armed bool
		stage int // 0: before the roll, 1: its header written, 2: its file synced, 3: its directory sync failed
	)
	// newLogTmp reports whether a new log is being created: its .tmp file
	// exists and is still empty (the header write is about to happen).
	newLogTmp := func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "log-*.tmp"))
		for _, p := range m {
			if fi, err := os.Stat(p); err == nil && fi.Size() == 0 {
				return true
			}
		}
		return false
	}
	fault := func(op FaultOp) error {
		mu.Lock()
		defer mu.Unlock()
		if !armed {
			return nil
		}
		switch {
		case op == FaultWrite && newLogTmp():
			if stage == 0 {
				stage = 1
				return nil
			}
			// Every later roll fails before its rename, as on a disk that
			// stays in trouble: the first roll's file is what stays.
			return syscall.EIO
		case op == FaultSync && stage == 1:
			stage = 2 // the new log's own fsync
		case op == FaultSync && stage == 2:
			stage = 3 // the directory fsync after the rename
			return syscall.EIO
		}
		return nil
	}
	opts := DurableOptions{CompactBytes: 1024, Fault: fault}
	d := open(t, dir, opts)
	mu.Lock()
	armed = true
	mu.Unlock()
	want := newModel()
	var acked, failed int
	for id := uint64(1); id <= 200; id++ {
		b := &Batch{Ops: []Op{
			{Kind: OpPutMessage, Message: plainMessage(id, 64)},
			{Kind: OpEnqueue, ClientID: "c", Outbound: &Outbound{Seq: id, MessageID: id, QoS: 1}},
		}}
		if err := commitWait(d, b); err != nil {
			failed++
			continue
		}
		acked++
		want.apply(b)
	}
	mu.Lock()
	reached := stage
	mu.Unlock()
	if reached != 3 {
		t.Fatalf("the roll's directory fsync was never failed (stage %d)", reached)
	}
	files := describeStore(dir)
	mustClose(t, d)
	d = open(t, dir, DurableOptions{})
	defer mustClose(t, d)
	if bad, why := d.Damaged(); bad {
		t.Fatalf("damaged: %s", why)
	}
	if err := sameState(t, load(t, d), want.s); err != nil {
		t.Fatalf("%d batches acknowledged, %d failed; after reopening: %v\nfiles:\n%s", acked, failed, err, files)
	}
	t.Logf("%d batches acknowledged, %d failed while the disk failed", acked, failed)
}
