package state

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestDurableKillAtEveryDiskOp copies the store directory before disk writes
// and fsyncs (what a kill at that moment leaves on disk) while
// eight committers and frequent compactions run, and checks that each copy
// recovers every batch acknowledged before it was taken. Each of three phases
// starts from one of the previous phase's copies (a restart after a kill).
func TestDurableKillAtEveryDiskOp(t *testing.T) {
	if testing.Short() {
		t.Skip("copies the store a few hundred times")
	}
	var ks killStore
	for phase := range 3 {
		t.Logf("phase %d", phase)
		if !killPhase(t, &ks) {
			return
		}
	}
}

type killStore struct {
	dir   string
	acked map[uint64]bool
}

func killPhase(t *testing.T, ks *killStore) bool {
	dir := ks.dir
	if dir == "" {
		dir = filepath.Join(t.TempDir(), "store")
		ks.acked = map[uint64]bool{}
	}
	var mu sync.Mutex
	acked := map[uint64]bool{}
	for id := range ks.acked {
		acked[id] = true
	}
	type copyOf struct {
		dir   string
		acked []uint64
	}
	var copies []copyOf
	var ops int
	fault := func(FaultOp) error {
		mu.Lock()
		defer mu.Unlock()
		ops++
		if ops%29 != 0 || len(copies) >= 80 {
			return nil
		}
		c := copyOf{dir: filepath.Join(t.TempDir(), "copy")}
		for id := range acked {
			c.acked = append(c.acked, id)
		}
		os.MkdirAll(c.dir, 0o700)
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if data, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
				os.WriteFile(filepath.Join(c.dir, e.Name()), data, 0o600)
			}
		}
		copies = append(copies, c)
		return nil
	}
	d := open(t, dir, DurableOptions{CompactBytes: 16 << 10, Fault: fault})
	next := load(t, d).NextID
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 400 {
				mu.Lock()
				id := next
				next++
				mu.Unlock()
				b := &Batch{Ops: []Op{
					{Kind: OpPutMessage, Message: &Message{ID: id, Topic: fmt.Sprintf("t/%d", id%8), Payload: make([]byte, 100), QoS: 1}},
					{Kind: OpEnqueue, ClientID: "c", Outbound: &Outbound{Seq: id, MessageID: id, QoS: 1}},
				}}
				if err := commitWait(d, b); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	mustClose(t, d)
	for i, c := range copies {
		d := open(t, c.dir, DurableOptions{})
		if bad, why := d.Damaged(); bad {
			t.Fatalf("copy %d: damaged: %s", i, why)
		}
		s := load(t, d)
		queued := map[uint64]bool{}
		for _, o := range s.Queues["c"] {
			queued[o.MessageID] = true
		}
		var lost []uint64
		for _, id := range c.acked {
			if !queued[id] {
				lost = append(lost, id)
			}
		}
		mustClose(t, d)
		if len(lost) > 0 {
			t.Fatalf("copy %d: %d acknowledged lost, e.g. %v", i, len(lost), lost[:min(5, len(lost))])
		}
	}
	t.Logf("%d copies checked", len(copies))
	if len(copies) == 0 {
		return false
	}
	c := copies[len(copies)/2+len(copies)/3]
	ks.dir = c.dir
	ks.acked = map[uint64]bool{}
	for _, id := range c.acked {
		ks.acked[id] = true
	}
	return true
}
