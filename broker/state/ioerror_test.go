package state

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// withoutFileCapabilities runs fn on an OS thread without CAP_DAC_OVERRIDE
// and CAP_DAC_READ_SEARCH in its effective set, as gatewayd runs under its
// systemd unit (its own user, no capabilities): file permissions then apply
// even when the tests run as root. Capabilities belong to a thread, and
// OpenDurable reads the store on the goroutine that calls it, so locking that
// goroutine to the thread is enough. Without those capabilities in the first
// place (not root), fn runs as it would anyway.
func withoutFileCapabilities(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var saved [2]unix.CapUserData
	if err := unix.Capget(&hdr, &saved[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("capget: %v", err)
	}
	dropped := saved
	for _, c := range []int{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH} {
		dropped[c/32].Effective &^= 1 << (c % 32)
	}
	if err := unix.Capset(&hdr, &dropped[0]); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("capset: %v", err)
	}
	defer func() {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		if err := unix.Capset(&hdr, &saved[0]); err != nil {
			// The thread stays locked and ends with this goroutine.
			t.Errorf("capset (restore): %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

// fileState is what a user would compare of a file or directory.
type fileState struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	data  []byte
}

// treeState is the state of dir (as ".") and of every entry in it.
func treeState(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"."}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	tree := map[string]fileState{}
	for _, name := range names {
		p := filepath.Join(dir, name)
		info, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fileState{mode: info.Mode(), size: info.Size(), mtime: info.ModTime()}
		if info.Mode().IsRegular() {
			if st.data, err = os.ReadFile(p); err != nil {
				t.Fatal(err)
			}
		}
		tree[name] = st
	}
	return tree
}

func diffTrees(before, after map[string]fileState) []string {
	var diffs []string
	for name, b := range before {
		a, ok := after[name]
		switch {
		case !ok:
			diffs = append(diffs, name+" is gone")
		case a.mode != b.mode || a.size != b.size || !a.mtime.Equal(b.mtime) || !bytes.Equal(a.data, b.data):
			diffs = append(diffs, fmt.Sprintf("%s changed: mode %v size %d mtime %v, was %v %d %v",
				name, a.mode, a.size, a.mtime, b.mode, b.size, b.mtime))
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok {
			diffs = append(diffs, name+" appeared")
		}
	}
	slices.Sort(diffs)
	return diffs
}

// leftStore is a store as a running gateway leaves it: a snapshot, the log
// it starts and a newer log, an old log that an interrupted compaction did
// not delete and a temporary file that an interrupted roll left behind.
type leftStore struct {
	want     *Snapshot
	snap     string   // the snapshot
	logs     []string // the logs after it, oldest first
	leftover []string // files start-up deletes once it has read the store
}

func writeLeftStore(t *testing.T, dir string) leftStore {
	t.Helper()
	f := &faults{}
	d := open(t, dir, DurableOptions{CompactBytes: 16 << 10, Fault: f.hook})
	m := newModel()
	commit := func(ops ...Op) {
		t.Helper()
		b := &Batch{Ops: ops}
		if err := commitWait(d, b); err != nil {
			t.Fatalf("commit: %v", err)
		}
		m.apply(b)
	}
	commit(Op{Kind: OpPutSession, ClientID: "meter-7", Session: &Session{
		ClientID: "meter-7", Version: 5, ExpiryInterval: 86400, DisconnectedAt: ts(1),
		Subscriptions: []Subscription{{Filter: "cmd/meter-7/#", QoS: 1}, {Filter: "$share/g/alarms/+", QoS: 2, ID: 3}},
	}})
	id := uint64(0)
	msg := func(topic string, payload int) *Message {
		id++
		return &Message{ID: id, Topic: topic, Payload: bytes.Repeat([]byte{byte(id)}, payload), QoS: 1, Retain: true, Created: ts(int64(id))}
	}
	for _, topic := range []string{"config/gw-01/interval", "config/gw-01/units", "status/gw-01"} {
		mm := msg(topic, 40)
		commit(Op{Kind: OpPutMessage, Message: mm}, Op{Kind: OpSetRetained, Topic: topic, MessageID: mm.ID})
	}
	for seq := uint64(1); seq <= 5; seq++ {
		mm := msg("cmd/meter-7/reset", 20)
		commit(Op{Kind: OpPutMessage, Message: mm}, Op{Kind: OpEnqueue, ClientID: "meter-7", Outbound: &Outbound{Seq: seq, MessageID: mm.ID, QoS: 1}})
	}
	firstLog, err := os.ReadFile(filepath.Join(dir, logName(1)))
	if err != nil {
		t.Fatal(err)
	}
	// Retained readings replaced over and over until a compaction has
	// written a snapshot.
	for round := 0; d.Stats().Compactions == 0; round++ {
		if round == 5000 {
			t.Fatalf("no compaction after %d bytes written", d.Stats().BytesWritten)
		}
		mm := msg(fmt.Sprintf("sensors/gw-01/t%d", round%4), 200)
		commit(Op{Kind: OpPutMessage, Message: mm}, Op{Kind: OpSetRetained, Topic: mm.Topic, MessageID: mm.ID})
	}
	// A write error tears the log being appended; the next batch starts a
	// new one.
	f.set(FaultWrite, 1, syscall.EIO)
	if err := commitWait(d, &Batch{Ops: []Op{{Kind: OpPutInbound, ClientID: "meter-7", PacketID: 99}}}); !errors.Is(err, syscall.EIO) {
		t.Fatalf("commit on a failing disk: %v, want EIO", err)
	}
	commit(Op{Kind: OpPutInbound, ClientID: "meter-7", PacketID: 12})
	mm := msg("status/gw-01", 30)
	commit(Op{Kind: OpPutMessage, Message: mm}, Op{Kind: OpSetRetained, Topic: "status/gw-01", MessageID: mm.ID})
	mustClose(t, d)

	var ls leftStore
	ls.want = m.s
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Name(), "snap-"):
			if ls.snap != "" {
				t.Fatalf("two snapshots: %s, %s", ls.snap, e.Name())
			}
			ls.snap = e.Name()
		case strings.HasPrefix(e.Name(), "log-"):
			ls.logs = append(ls.logs, e.Name())
		}
	}
	slices.Sort(ls.logs)
	if ls.snap == "" || len(ls.logs) < 2 || ls.logs[0][4:] != ls.snap[5:] || ls.logs[0] == logName(1) {
		t.Fatalf("want a snapshot and two logs from it on, found %s %v", ls.snap, ls.logs)
	}
	last, err := os.ReadFile(filepath.Join(dir, ls.logs[len(ls.logs)-1]))
	if err != nil {
		t.Fatal(err)
	}
	var lastSeq uint64
	fmt.Sscanf(ls.logs[len(ls.logs)-1], "log-%x", &lastSeq)
	ls.leftover = []string{logName(1), logName(lastSeq+1) + ".tmp"}
	os.WriteFile(filepath.Join(dir, ls.leftover[0]), firstLog, 0o600)
	os.WriteFile(filepath.Join(dir, ls.leftover[1]), nextLog(lastSeq+1, len(last)), 0o600)
	return ls
}

// TestDurableUnreadableStoreIsLeftAsItIs: an I/O error while reading the
// store at start-up (here EACCES, as after a wrong chown or chmod; EIO from
// a worn card or EMFILE take the same path) is not damage. OpenDurable fails
// naming the file and the cause, and changes nothing: no file renamed,
// written or deleted (not even the leftovers it would delete), nothing moved
// aside, and the lock released. Once the cause is gone, the next start finds
// the whole store.
func TestDurableUnreadableStoreIsLeftAsItIs(t *testing.T) {
	base := t.TempDir()
	orig := filepath.Join(base, "orig")
	ls := writeLeftStore(t, orig)
	if len(ls.want.Retained) != 7 || len(ls.want.Sessions) != 1 || len(ls.want.Queues["meter-7"]) != 5 || len(ls.want.Inbound["meter-7"]) != 1 {
		t.Fatalf("the store holds %d retained, %d sessions, %d queued, %d inbound: not what was written",
			len(ls.want.Retained), len(ls.want.Sessions), len(ls.want.Queues["meter-7"]), len(ls.want.Inbound["meter-7"]))
	}
	cases := []struct {
		name string
		file string      // made unreadable, "" for the directory
		mode fs.FileMode // its mode meanwhile
		op   string      // the failing call in the error
	}{
		{"snapshot", ls.snap, 0, "open"},
		{"log the snapshot starts", ls.logs[0], 0, "open"},
		{"newest log", ls.logs[len(ls.logs)-1], 0, "open"},
		{"lock file", "LOCK", 0, "open"},
		{"directory listing", "", 0o300, "open"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent := filepath.Join(base, strings.ReplaceAll(tc.name, " ", "-"))
			dir := filepath.Join(parent, "store")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(orig)
			for _, e := range entries {
				data, err := os.ReadFile(filepath.Join(orig, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			bad, key := filepath.Join(dir, tc.file), tc.file
			if key == "" {
				key = "."
			}
			before, parentBefore := treeState(t, dir), treeState(t, parent)
			if err := os.Chmod(bad, tc.mode); err != nil {
				t.Fatal(err)
			}
			// Two starts, as systemd's restarts would make.
			for start := 1; start <= 2; start++ {
				var d *Durable
				var err, direct error
				withoutFileCapabilities(t, func() {
					if tc.file == "" {
						_, direct = os.ReadDir(dir)
					} else {
						_, direct = os.ReadFile(bad)
					}
					d, err = OpenDurable(dir, DurableOptions{Logf: t.Logf})
				})
				if direct == nil {
					t.Fatalf("%s is readable with mode %v and no CAP_DAC_OVERRIDE: the test cannot make it unreadable here", bad, tc.mode)
				}
				if err == nil {
					damaged, why := d.Damaged()
					mustClose(t, d)
					t.Fatalf("start %d: OpenDurable succeeded with %s unreadable (damaged %v: %s)", start, bad, damaged, why)
				}
				t.Logf("start %d: %v", start, err)
				if want := fmt.Sprintf("%s %s: %v", tc.op, bad, syscall.EACCES); !strings.Contains(err.Error(), want) || !errors.Is(err, fs.ErrPermission) {
					t.Errorf("start %d: error %q does not say %q", start, err, want)
				}
			}
			// The cause goes away.
			if err := os.Chmod(bad, before[key].mode.Perm()); err != nil {
				t.Fatal(err)
			}
			if diffs := diffTrees(before, treeState(t, dir)); len(diffs) > 0 {
				t.Errorf("the store was changed:\n  %s", strings.Join(diffs, "\n  "))
			}
			if diffs := diffTrees(parentBefore, treeState(t, parent)); len(diffs) > 0 {
				t.Errorf("next to the store:\n  %s", strings.Join(diffs, "\n  "))
			}
			if aside, _ := filepath.Glob(filepath.Join(parent, "*damaged*")); len(aside) > 0 {
				t.Errorf("moved aside: %v", aside)
			}
			if aside, _ := filepath.Glob(filepath.Join(dir, "*damaged*")); len(aside) > 0 {
				t.Errorf("moved aside inside the store: %v", aside)
			}

			d := open(t, dir, DurableOptions{})
			defer mustClose(t, d)
			if bad, why := d.Damaged(); bad {
				t.Fatalf("reported damaged once readable: %s", why)
			}
			if err := sameState(t, load(t, d), ls.want); err != nil {
				t.Fatalf("once readable: %v", err)
			}
			for _, name := range ls.leftover {
				if _, err := os.Lstat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("leftover %s not deleted once the store was read: %v", name, err)
				}
			}
		})
	}
}

// A compaction that keeps failing (in the field: a snapshot larger than the
// free space; here: its snap-*.tmp cannot be created) is retried after
// CompactBytes more log, also once the logs number maxLogs: not at every
// commit, each rolling a new log and rewriting the whole state.
func TestFailingCompactionBacksOffWithManyLogs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq < 4000; seq++ {
		if err := os.Mkdir(filepath.Join(dir, snapName(seq)+".tmp"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var failures atomic.Int64
	opts := DurableOptions{CompactBytes: 4 << 10, Logf: func(f string, a ...any) {
		if strings.HasPrefix(f, "state: compaction") {
			failures.Add(1)
		}
	}}
	d := open(t, dir, opts)
	const commits = 2000
	for i := range commits {
		b := &Batch{Ops: []Op{{Kind: OpPutMessage, Message: plainMessage(uint64(i+1), 200)}}}
		if err := commitWait(d, b); err != nil {
			t.Fatal(err)
		}
	}
	st := d.Stats()
	mustClose(t, d)
	logs, _ := filepath.Glob(filepath.Join(dir, "log-*"))
	// One retry, and one log, per CompactBytes of log written after the
	// first maxLogs logs.
	if want := int(st.DiskBytes/opts.CompactBytes) + maxLogs + 2; len(logs) > want {
		t.Fatalf("%d log files after %d commits and %d failed compactions (%d bytes of log), want at most %d",
			len(logs), commits, failures.Load(), st.DiskBytes, want)
	}
	if failures.Load() == 0 {
		t.Fatal("no compaction failed: the test does not test the back-off")
	}
}
