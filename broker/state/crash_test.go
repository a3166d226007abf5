package state

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Knobs of TestDurableSurvivesSIGKILL, for longer or harsher runs than the
// default (for example under CPU load: -state.kills 200 -state.compact 4096).
var (
	crashKills   = flag.Int("state.kills", 20, "how many times TestDurableSurvivesSIGKILL kills the writer")
	crashCompact = flag.Int("state.compact", 64<<10, "CompactBytes of the store in TestDurableSurvivesSIGKILL's child")
	crashDequeue = flag.Int("state.dequeue", 3, "TestDurableSurvivesSIGKILL's child removes every message whose id is a multiple of this")
	crashMaxAcks = flag.Int("state.maxacks", 3000, "TestDurableSurvivesSIGKILL kills its child after 1 to this many acknowledgements")
	crashProcs   = flag.Int("state.procs", 0, "GOMAXPROCS of TestDurableSurvivesSIGKILL's child (0: the default)")
)

const (
	crashChildEnv   = "GATEWAYD_STATE_CRASH_CHILD"
	crashCompactEnv = "GATEWAYD_STATE_CRASH_COMPACT"
	crashDequeueEnv = "GATEWAYD_STATE_CRASH_DEQUEUE"
)

// envInt reads a positive integer from the environment, or def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// crashChild commits batches from 8 goroutines as fast as the store takes
// them and prints "ack <id>" once done reports a batch durable, and
// "deq <id>" once the removal of an earlier message is durable. It runs until
// it is killed.
func crashChild() {
	dir := os.Getenv(crashChildEnv)
	deq := uint64(envInt(crashDequeueEnv, 3))
	d, err := OpenDurable(dir, DurableOptions{
		CompactBytes: int64(envInt(crashCompactEnv, 64<<10)),
		Logf:         func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if bad, why := d.Damaged(); bad {
		fmt.Fprintln(os.Stderr, "damaged:", why)
		os.Exit(3)
	}
	s, _ := d.Load()
	var next atomic.Uint64
	next.Store(s.NextID)
	var out sync.Mutex
	say := func(what string, id uint64) {
		out.Lock()
		fmt.Fprintf(os.Stdout, "%s %d\n", what, id) // unbuffered: printed means acknowledged
		out.Unlock()
	}
	say("ready", 0)
	for range 8 {
		go func() {
			r := rand.New(rand.NewPCG(rand.Uint64(), 0))
			for {
				id := next.Add(1) - 1
				b := &Batch{Ops: []Op{
					{Kind: OpPutMessage, Message: &Message{ID: id, Topic: fmt.Sprintf("t/%d", id%8), Payload: make([]byte, r.IntN(300)), QoS: 1}},
					{Kind: OpEnqueue, ClientID: "c", Outbound: &Outbound{Seq: id, MessageID: id, QoS: 1}},
					{Kind: OpSetRetained, Topic: fmt.Sprintf("t/%d", id%8), MessageID: id},
				}}
				if err := commitWait(d, b); err != nil {
					fmt.Fprintln(os.Stderr, "commit:", err)
					os.Exit(4)
				}
				say("ack", id)
				if id%1000 == 0 {
					st := d.Stats()
					fmt.Fprintf(os.Stderr, "at id %d: %d compactions, %d write errors, %d batches, disk %d bytes, live %d bytes\n",
						id, st.Compactions, st.WriteErrors, st.Batches, st.DiskBytes, st.LiveBytes)
				}
				if id%deq == 0 {
					if err := commitWait(d, &Batch{Ops: []Op{{Kind: OpDequeue, ClientID: "c", Seq: id}}}); err != nil {
						fmt.Fprintln(os.Stderr, "commit:", err)
						os.Exit(4)
					}
					say("deq", id)
				}
			}
		}()
	}
	select {}
}

func TestDurableSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a child process 20 times")
	}
	dir := filepath.Join(t.TempDir(), "store")
	acked := map[uint64]bool{}
	dequeued := map[uint64]bool{}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for kill := range *crashKills {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir,
			fmt.Sprintf("%s=%d", crashCompactEnv, *crashCompact),
			fmt.Sprintf("%s=%d", crashDequeueEnv, *crashDequeue))
		if *crashProcs > 0 {
			cmd.Env = append(cmd.Env, fmt.Sprintf("GOMAXPROCS=%d", *crashProcs))
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			io.Copy(io.Discard, stdout)
		}()
		// Kill after a random number of acknowledgements, so that the moment
		// falls anywhere in a write, an fsync, a roll or a compaction.
		stopAt := 1 + r.IntN(*crashMaxAcks)
		n := 0
		killed := false
		for line := range lines {
			what, num, _ := strings.Cut(line, " ")
			id, _ := strconv.ParseUint(num, 10, 64)
			switch what {
			case "ack":
				acked[id] = true
				n++
			case "deq":
				dequeued[id] = true
			}
			if n >= stopAt && !killed {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("kill %d: child ended on its own after %d acks: %v\n%s", kill, n, err, stderr.String())
		}
		// A race-enabled child reports data races on stderr, and a killed
		// child never exits with the race detector's status.
		if strings.Contains(stderr.String(), "DATA RACE") {
			t.Fatalf("kill %d: the child had a data race:\n%s", kill, stderr.String())
		}

		files, contents := readStore(dir)
		d := open(t, dir, DurableOptions{})
		if bad, why := d.Damaged(); bad {
			t.Fatalf("kill %d: store damaged: %s\nfiles after the kill (kept in %s):\n%s", kill, why, keepStore(contents), files)
		}
		s := load(t, d)
		queued := map[uint64]bool{}
		for _, o := range s.Queues["c"] {
			queued[o.MessageID] = true
		}
		var lost, resurrected []uint64
		for id := range acked {
			// A removal that was not yet acknowledged may or may not be durable.
			mayBeGone := id%uint64(*crashDequeue) == 0
			if !queued[id] && !mayBeGone || queued[id] && s.Messages[id] == nil {
				lost = append(lost, id)
			}
			if dequeued[id] && queued[id] {
				resurrected = append(resurrected, id)
			}
		}
		for topic, id := range s.Retained {
			if s.Messages[id] == nil || s.Messages[id].Topic != topic {
				t.Errorf("kill %d: retained %s refers to message %d: %+v", kill, topic, id, s.Messages[id])
			}
		}
		st := d.Stats()
		mustClose(t, d)
		slices.Sort(lost)
		if len(lost) > 0 || len(resurrected) > 0 {
			t.Fatalf("kill %d after %d acks: %d acknowledged messages lost %v, acknowledged removals undone %v\nfiles after the kill (kept in %s):\n%s\nchild's log:\n%s", kill, n, len(lost), lost, resurrected, keepStore(contents), files, stderr.String())
		}
		t.Logf("kill %d after %d acks: %d acknowledged so far, %d queued, disk %d bytes", kill, n, len(acked), len(queued), st.DiskBytes)
	}
}

// describeStore lists the files of a store directory with their sizes and
// header fields, and for logs and snapshots where their valid records end and
// why, for the message of a failed crash test.
func describeStore(dir string) string {
	desc, _ := readStore(dir)
	return desc
}

// readStore is describeStore that also returns the files' contents, so that
// a failed test can keep the store as the kill left it.
func readStore(dir string) (string, map[string][]byte) {
	entries, _ := os.ReadDir(dir)
	var b strings.Builder
	files := map[string][]byte{}
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		files[e.Name()] = data
		h, err := parseHeader(data)
		fmt.Fprintf(&b, "  %s: %d bytes, header %+v %v", e.Name(), len(data), h, err)
		if err == nil && len(data) > headerSize {
			records := 0
			end, stop := scanRecords(data, headerSize, func([]byte) error { records++; return nil })
			fmt.Fprintf(&b, "; %d records valid to offset %d", records, end)
			if stop != nil {
				fmt.Fprintf(&b, ", then %v", stop)
			}
		}
		b.WriteByte('\n')
	}
	return b.String(), files
}

// keepStore writes files (a store as readStore found it) to a new directory
// that outlives the test, and returns its name.
func keepStore(files map[string][]byte) string {
	dir, err := os.MkdirTemp("", "gatewayd-state-crash-")
	if err != nil {
		return err.Error()
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err.Error()
		}
	}
	return dir
}

// TestDurableFilesystemFull runs the store on a real 1 MiB tmpfs until it is
// full, then frees space and expects it to carry on.
func TestDurableFilesystemFull(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a 1 MiB tmpfs here (needs root and CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 256<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := DurableOptions{MaxBytes: -1}
	d := open(t, filepath.Join(mnt, "store"), opts)
	var acked []uint64
	id := uint64(0)
	commit := func() error {
		id++
		return commitWait(d, &Batch{Ops: []Op{
			{Kind: OpPutMessage, Message: plainMessage(id, 8<<10)},
			{Kind: OpEnqueue, ClientID: "c", Outbound: &Outbound{Seq: id, MessageID: id, QoS: 1}},
		}})
	}
	var full error
	for full == nil && id < 1000 {
		if full = commit(); full == nil {
			acked = append(acked, id)
		}
	}
	if !errors.Is(full, syscall.ENOSPC) {
		t.Fatalf("after %d batches: %v, want ENOSPC", id, full)
	}
	for range 3 {
		if err := commit(); err == nil {
			t.Fatal("commit succeeded on a full filesystem")
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := commit(); err != nil {
			t.Fatalf("commit after space was freed: %v", err)
		}
		acked = append(acked, id)
	}
	st := d.Stats()
	d, s := reopen(t, d, opts)
	defer mustClose(t, d)
	var got []uint64
	for _, o := range s.Queues["c"] {
		got = append(got, o.MessageID)
	}
	if !slices.Equal(got, acked) {
		t.Fatalf("after the disk filled (%d write errors):\n got %v\nwant %v", st.WriteErrors, got, acked)
	}
	t.Logf("%d batches stored, %d write errors while full", len(acked), st.WriteErrors)
}

// TestDurableDamagedStoreOnAMountPoint: a store directory that is itself a
// mount point cannot be renamed; its files are moved into a subdirectory.
func TestDurableDamagedStoreOnAMountPoint(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	os.MkdirAll(dir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	junk := []byte("not a store at all, but long enough to hold a header")
	os.WriteFile(filepath.Join(dir, logName(1)), junk, 0o600)
	d := open(t, dir, DurableOptions{})
	bad, why := d.Damaged()
	if !bad {
		t.Fatal("not reported damaged")
	}
	aside, _ := filepath.Glob(filepath.Join(dir, "damaged-*", logName(1)))
	if len(aside) != 1 || !strings.Contains(why, filepath.Dir(aside[0])) {
		t.Fatalf("damaged log not kept inside the mount point (%v): %s", aside, why)
	}
	if err := commitWait(d, &Batch{Ops: []Op{{Kind: OpPutInbound, ClientID: "x", PacketID: 1}}}); err != nil {
		t.Fatal(err)
	}
	d, s := reopen(t, d, DurableOptions{})
	defer mustClose(t, d)
	if len(s.Inbound["x"]) != 1 {
		t.Errorf("batch after the restart lost: %v", s.Inbound)
	}
}
