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

var crashKills = flag.Int("state.kills", 20, "how many times TestDurableSurvivesSIGKILL kills the writer")

const crashChildEnv = "GATEWAYD_STATE_CRASH_CHILD"

// crashChild commits batches from 8 goroutines as fast as the store takes
// them and prints "ack <id>" once done reports a batch durable, and
// "deq <id>" once the removal of an earlier message is durable. It runs until
// it is killed.
func crashChild() {
	dir := os.Getenv(crashChildEnv)
	d, err := OpenDurable(dir, DurableOptions{
		CompactBytes: 64 << 10,
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
				if id%3 == 0 {
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
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
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
		stopAt := 1 + r.IntN(3000)
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

		files := describeStore(dir)
		d := open(t, dir, DurableOptions{})
		if bad, why := d.Damaged(); bad {
			t.Fatalf("kill %d: store damaged: %s\nfiles after the kill:\n%s", kill, why, files)
		}
		s := load(t, d)
		queued := map[uint64]bool{}
		for _, o := range s.Queues["c"] {
			queued[o.MessageID] = true
		}
		var lost, resurrected []uint64
		for id := range acked {
			// A removal that was not yet acknowledged may or may not be durable.
			mayBeGone := id%3 == 0
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
			t.Fatalf("kill %d after %d acks: acknowledged messages lost %v, acknowledged removals undone %v\nfiles after the kill:\n%s\nchild's log:\n%s", kill, n, lost, resurrected, files, stderr.String())
		}
		t.Logf("kill %d after %d acks: %d acknowledged so far, %d queued, disk %d bytes", kill, n, len(acked), len(queued), st.DiskBytes)
	}
}

// describeStore lists the files of a store directory with their sizes and
// header fields, for the message of a failed crash test.
func describeStore(dir string) string {
	entries, _ := os.ReadDir(dir)
	var b strings.Builder
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		h, err := parseHeader(data)
		fmt.Fprintf(&b, "  %s: %d bytes, header %+v %v\n", e.Name(), len(data), h, err)
	}
	return b.String()
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
