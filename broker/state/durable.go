package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Errors a durable store gives to done.
var (
	// ErrQuotaExceeded: storing the batch would take the live data over
	// DurableOptions.MaxBytes (the broker answers v5 0x97 Quota exceeded).
	ErrQuotaExceeded = errors.New("state: store quota exceeded")
	// ErrBusy: more batches are waiting for the disk than DurableOptions.MaxPending.
	ErrBusy = errors.New("state: store busy, too many batches waiting for the disk")
	// ErrClosed: Commit after Close.
	ErrClosed = errors.New("state: store closed")
)

// Defaults of DurableOptions.
const (
	DefaultMaxBytes     = 64 << 20
	DefaultCompactBytes = 4 << 20
	DefaultMaxPending   = 1 << 16
	DefaultCloseTimeout = 10 * time.Second

	groupRecord = 1 << 20 // batches of one group commit per record, at most
)

// DurableOptions configures a Durable store. The zero value is usable.
type DurableOptions struct {
	// MaxBytes caps the live data (sessions, queued and retained messages,
	// wills), counted as the size of its encoding. A batch that would take it
	// over fails with ErrQuotaExceeded; a batch that only removes never does.
	// The files use at most about 3×MaxBytes+CompactBytes (a snapshot, the log
	// since it, and the next snapshot while it is written).
	// 0 means DefaultMaxBytes; negative means no limit.
	MaxBytes int64
	// CompactBytes is how much log beyond the live data starts a compaction.
	// Larger means fewer rewrites of the live state, more disk. 0 means
	// DefaultCompactBytes.
	CompactBytes int64
	// MaxPending is how many batches may wait for the writer. Commit fails at
	// once with ErrBusy beyond it rather than block the broker (the writer's
	// done callbacks may themselves call Commit). 0 means DefaultMaxPending.
	MaxPending int
	// CloseTimeout bounds Close when the disk does not answer. 0 means
	// DefaultCloseTimeout.
	CloseTimeout time.Duration
	// Fault, when set, is called before every write and fsync the store makes.
	// An error it returns is what the disk returned: a write is then cut in
	// half (a torn write), an fsync is not done. For fault injection in tests.
	Fault func(FaultOp) error
	// Logf, when set, receives one line per damaged store, write error,
	// compaction failure and leftover file that start-up could not remove.
	Logf func(format string, args ...any)
}

// FaultOp is the disk operation Fault is asked about.
type FaultOp byte

// Disk operations.
const (
	FaultWrite FaultOp = iota + 1
	FaultSync
)

func (o FaultOp) String() string {
	if o == FaultWrite {
		return "write"
	}
	return "fsync"
}

// Health is what a store can tell about itself for $SYS and metrics; the
// broker can look for it on its Store with a type assertion.
type Health interface {
	Stats() Stats
	// Damaged reports whether the store found at start-up was damaged (and
	// moved aside, or its last log cut at the damage), and why.
	Damaged() (bool, string)
}

var _ Health = (*Durable)(nil)

// Stats are running totals since OpenDurable, for $SYS and metrics.
type Stats struct {
	BytesWritten   uint64 // bytes handed to write(2): logs, snapshots, headers
	Fsyncs         uint64 // fsync/fdatasync calls on files and directories
	Batches        uint64 // batches made durable
	MessagesStored uint64 // OpPutMessage made durable
	Compactions    uint64
	QuotaRejects   uint64 // batches failed with ErrQuotaExceeded
	BusyRejects    uint64 // batches failed with ErrBusy
	WriteErrors    uint64 // failed writes or fsyncs (each fails its whole group)
	LiveBytes      int64  // live data, what MaxBytes limits
	DiskBytes      int64  // size of the store's files
}

// Durable is a Store that keeps the broker's state in an append-only log of
// checksummed records under one directory; see the package documentation.
//
// It keeps its own copy of the live state in memory (about LiveBytes) to count
// references, enforce MaxBytes and write snapshots without reading the log.
// Commit never waits for the disk: when MaxPending batches are already queued
// it fails the batch with ErrBusy (counted in Stats.BusyRejects) instead.
type Durable struct {
	dir  string
	opts DurableOptions
	lock *os.File

	damaged    bool
	damagedWhy string
	loaded     *Snapshot

	// Commit side.
	mu           sync.Mutex
	queue        []pending
	pendingBytes int
	closed       bool
	wake         chan struct{}
	exited       chan struct{}
	closeErr     error

	// Writer goroutine only.
	im          *image
	f           *os.File
	seq         uint64 // the log being appended
	size        int64  // its valid length
	broken      bool   // the log must be rolled before the next write
	firstLog    uint64 // the oldest log still needed
	logBytes    int64  // valid bytes of logs firstLog..seq
	snapBytes   int64
	compacting  bool
	compactBase int64 // logBytes of the logs the running compaction replaces
	compactNext int64 // no compaction before logBytes reaches this (after a failure)
	buf         []byte
	spare       []pending
	compactDone chan compactResult
	stopCompact atomic.Bool
	compactWG   sync.WaitGroup

	st struct {
		bytes, fsyncs, batches, msgs, compactions, quota, busy, werr atomic.Uint64
		live, disk                                                   atomic.Int64
	}
}

type pending struct {
	enc  []byte
	grow int64
	msgs int
	done func(error)
}

type compactResult struct {
	seq  uint64
	size int64
	err  error
}

// OpenDurable opens or creates the store in dir. It never fails because of
// what it finds there: a torn last record (a crash or power cut during a
// write) is cut off; a last log damaged in its middle is cut at the damage,
// a copy of it goes to dir.damaged-<time> and Damaged reports it; anything
// worse is moved aside to dir.damaged-<time>, the store starts empty, and
// Damaged reports it.
//
// It fails when dir cannot be created, is held by another process, or cannot
// be read: an error listing dir or opening or reading one of its files (EIO
// from a worn card, EMFILE, ENOMEM, EACCES after a wrong chown) says nothing
// about the contents, so the store is left exactly as it is (nothing moved
// aside, nothing deleted, the lock released) and the error, which names the
// file and the cause, is returned. Opening again once the cause is gone (a
// restart) finds everything the store held.
func OpenDurable(dir string, opts DurableOptions) (*Durable, error) {
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.CompactBytes <= 0 {
		opts.CompactBytes = DefaultCompactBytes
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.CloseTimeout <= 0 {
		opts.CloseTimeout = DefaultCloseTimeout
	}
	d := &Durable{
		dir:         filepath.Clean(dir),
		opts:        opts,
		wake:        make(chan struct{}, 1),
		exited:      make(chan struct{}),
		compactDone: make(chan compactResult, 1),
	}
	if !exists(d.dir) {
		if err := os.MkdirAll(d.dir, 0o700); err != nil {
			return nil, fmt.Errorf("state: create store directory: %w", err)
		}
		// The new directory's entry must be durable before anything in it is.
		syncDir(filepath.Dir(d.dir))
	}
	if err := d.lockDir(); err != nil {
		return nil, err
	}
	r, err := recoverDir(d.dir)
	if err != nil {
		var dmg *damage
		if !errors.As(err, &dmg) {
			d.lock.Close()
			return nil, fmt.Errorf("state: cannot read the store in %s (left as it is, nothing moved aside or deleted): %w", d.dir, err)
		}
		if err := d.moveAside(err.Error()); err != nil {
			d.lock.Close()
			return nil, err
		}
		r = &recovered{im: newImage(), fresh: true}
	}
	// Only now that the whole store has been read. A leftover that cannot be
	// removed is harmless: recovery ignores it, and the next start-up tries
	// again.
	for _, name := range append(r.temp, r.obsolete...) {
		if err := os.Remove(filepath.Join(d.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.logf("state: remove leftover file: %v", err)
		}
	}
	d.im = r.im
	d.loaded = d.im.snapshot()
	d.snapBytes = r.snapLen
	if r.fresh {
		d.seq, d.firstLog, d.broken = 0, 1, true
	} else {
		d.seq, d.size, d.firstLog, d.logBytes = r.lastSeq, r.validLen, r.firstLog, r.logBytes
		if r.validLen == r.fileLen {
			f, err := os.OpenFile(filepath.Join(d.dir, logName(d.seq)), os.O_WRONLY, 0)
			if err == nil {
				_, err = f.Seek(d.size, 0)
			}
			if err != nil {
				d.logf("state: reopen %s: %v", logName(d.seq), err)
				if f != nil {
					f.Close()
				}
				d.broken = true
			} else {
				d.f = f
			}
		} else if r.salvaged != "" {
			d.keepDamagedLog(r.salvaged, logName(r.lastSeq), r.validLen)
			d.broken = true
		} else {
			d.logf("state: cut torn tail: %s", r.tornTail)
			d.broken = true
		}
	}
	if d.broken {
		if err := d.roll(); err != nil {
			d.logf("state: start log: %v (retrying with the next batch)", err)
		}
	}
	d.st.live.Store(d.im.bytes)
	d.st.disk.Store(d.snapBytes + d.logBytes)
	go d.writer()
	return d, nil
}

func (d *Durable) logf(format string, args ...any) {
	if d.opts.Logf != nil {
		d.opts.Logf(format, args...)
	}
}

func (d *Durable) lockDir() error {
	f, err := os.OpenFile(filepath.Join(d.dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("state: lock the store: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("state: store %s is in use by another process: %w", d.dir, err)
	}
	d.lock = f
	return nil
}

// moveAside renames the store directory to <dir>.damaged-<time> and starts an
// empty one. When the rename is not possible (dir is a mount point), the files
// move into a damaged-<time> directory inside it instead.
func (d *Durable) moveAside(reason string) error {
	stamp := time.Now().UTC().Format("20060102T150405Z")
	target := d.dir + ".damaged-" + stamp
	for i := 2; exists(target); i++ {
		target = fmt.Sprintf("%s.damaged-%s-%d", d.dir, stamp, i)
	}
	d.lock.Close()
	d.lock = nil
	if err := os.Rename(d.dir, target); err == nil {
		syncDir(filepath.Dir(d.dir))
		if err := os.MkdirAll(d.dir, 0o700); err != nil {
			return fmt.Errorf("state: create store directory: %w", err)
		}
		syncDir(filepath.Dir(d.dir))
	} else {
		target = filepath.Join(d.dir, "damaged-"+stamp)
		if err := os.Mkdir(target, 0o700); err != nil {
			return fmt.Errorf("state: move damaged store aside: %w", err)
		}
		entries, _ := os.ReadDir(d.dir)
		for _, e := range entries {
			if e.Type().IsRegular() && e.Name() != "LOCK" {
				if err := os.Rename(filepath.Join(d.dir, e.Name()), filepath.Join(target, e.Name())); err != nil {
					return fmt.Errorf("state: move damaged store aside: %w", err)
				}
			}
		}
		syncDir(d.dir)
	}
	d.damaged = true
	d.damagedWhy = fmt.Sprintf("%s (moved to %s)", reason, target)
	d.logf("state: damaged store started empty: %s", d.damagedWhy)
	return d.lockDir()
}

// keepDamagedLog reports a last log cut at damage that valid records
// follow: the store keeps what precedes the cut and goes on, and a copy of
// the log as found goes to <dir>.damaged-<time> (or a damaged-<time>
// directory inside dir when its parent is not writable), so that the
// records after the cut are not lost for good.
func (d *Durable) keepDamagedLog(reason, name string, kept int64) {
	stamp := time.Now().UTC().Format("20060102T150405Z")
	target := d.dir + ".damaged-" + stamp
	for i := 2; exists(target); i++ {
		target = fmt.Sprintf("%s.damaged-%s-%d", d.dir, stamp, i)
	}
	err := os.Mkdir(target, 0o700)
	if err != nil {
		target = filepath.Join(d.dir, "damaged-"+stamp)
		err = os.Mkdir(target, 0o700)
	}
	if err == nil {
		err = copyFileSynced(filepath.Join(d.dir, name), filepath.Join(target, name))
		syncDir(filepath.Dir(target))
	}
	d.damaged = true
	if err != nil {
		d.damagedWhy = fmt.Sprintf("%s (kept the first %d bytes; copying the log aside failed: %v)", reason, kept, err)
	} else {
		d.damagedWhy = fmt.Sprintf("%s (kept the first %d bytes; the log as found is in %s)", reason, kept, target)
	}
	d.logf("state: damaged log cut: %s", d.damagedWhy)
}

func copyFileSynced(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// Damaged reports whether the store found at start-up was damaged beyond a
// torn last record, and if so why, and where it or a copy of its damaged log
// went.
func (d *Durable) Damaged() (bool, string) { return d.damaged, d.damagedWhy }

// Dir is the store directory.
func (d *Durable) Dir() string { return d.dir }

// Durable reports true: done is called after fsync.
func (d *Durable) Durable() bool { return true }

// Load returns the state found at start-up (the same snapshot every call).
func (d *Durable) Load() (*Snapshot, error) { return d.loaded, nil }

// Stats returns the running totals.
func (d *Durable) Stats() Stats {
	return Stats{
		BytesWritten:   d.st.bytes.Load(),
		Fsyncs:         d.st.fsyncs.Load(),
		Batches:        d.st.batches.Load(),
		MessagesStored: d.st.msgs.Load(),
		Compactions:    d.st.compactions.Load(),
		QuotaRejects:   d.st.quota.Load(),
		BusyRejects:    d.st.busy.Load(),
		WriteErrors:    d.st.werr.Load(),
		LiveBytes:      d.st.live.Load(),
		DiskBytes:      d.st.disk.Load(),
	}
}

// Commit queues b for the writer goroutine and returns at once; done is called
// after the fsync that made b durable, or with the error that kept it from
// being so. b is encoded before Commit returns, so the caller may reuse it.
// When MaxPending batches are already waiting, or after Close, the batch fails
// at once with ErrBusy or ErrClosed: done is then called on a new goroutine, so
// that a caller holding a lock that done takes cannot deadlock.
func (d *Durable) Commit(b *Batch, done func(error)) {
	enc, grow, msgs, err := appendBatch(nil, b)
	if err != nil {
		go done(err)
		return
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		go done(ErrClosed)
		return
	}
	if len(d.queue) >= d.opts.MaxPending {
		d.mu.Unlock()
		d.st.busy.Add(1)
		go done(ErrBusy)
		return
	}
	d.queue = append(d.queue, pending{enc: enc, grow: grow, msgs: msgs, done: done})
	d.pendingBytes += len(enc)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Close writes what was committed before it, stops a running compaction and
// closes the files. It gives up after CloseTimeout if the disk does not answer.
func (d *Durable) Close() error {
	d.mu.Lock()
	already := d.closed
	d.closed = true
	d.mu.Unlock()
	if !already {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	select {
	case <-d.exited:
		return d.closeErr
	case <-time.After(d.opts.CloseTimeout):
		return fmt.Errorf("state: close %s: disk did not answer within %v", d.dir, d.opts.CloseTimeout)
	}
}

func (d *Durable) writer() {
	for {
		d.mu.Lock()
		for len(d.queue) == 0 && !d.closed {
			d.mu.Unlock()
			select {
			case <-d.wake:
			case r := <-d.compactDone:
				d.compacted(r)
			}
			d.mu.Lock()
		}
		group := d.queue
		d.queue = d.spare[:0]
		d.pendingBytes = 0
		closed := d.closed
		d.mu.Unlock()

		if len(group) > 0 {
			d.commitGroup(group)
			clear(group)
			d.spare = group[:0]
			if cap(d.spare) > 4096 {
				d.spare = nil
			}
		}
		select {
		case r := <-d.compactDone:
			d.compacted(r)
		default:
		}
		if closed && len(group) == 0 {
			break
		}
		if !closed {
			d.maybeCompact()
		}
	}
	d.stopCompact.Store(true)
	d.compactWG.Wait()
	select {
	case r := <-d.compactDone:
		d.compacted(r)
	default:
	}
	if d.f != nil {
		if err := d.f.Close(); err != nil {
			d.closeErr = fmt.Errorf("state: close %s: %w", logName(d.seq), err)
		}
		d.f = nil
	}
	if d.lock != nil {
		d.lock.Close()
	}
	close(d.exited)
}

// commitGroup writes every batch of group that fits the quota as one record,
// fsyncs once, and then calls each done.
func (d *Durable) commitGroup(group []pending) {
	if d.broken {
		if err := d.roll(); err != nil {
			for _, p := range group {
				p.done(err)
			}
			return
		}
	}
	// Batches go into records of up to groupRecord bytes (a bigger batch gets
	// a record of its own), all written together and fsynced once.
	buf := append(d.buf[:0], make([]byte, recordHeader)...)
	rec := 0 // start of the open record
	var grow int64
	accepted := group[:0:0]
	for _, p := range group {
		if p.grow > 0 && d.opts.MaxBytes > 0 && d.im.bytes+grow+p.grow > d.opts.MaxBytes {
			d.st.quota.Add(1)
			p.done(fmt.Errorf("state: batch adding %d bytes to %d live: %w (max_bytes %d)",
				p.grow, d.im.bytes+grow, ErrQuotaExceeded, d.opts.MaxBytes))
			continue
		}
		if len(p.enc) > maxRecord {
			p.done(fmt.Errorf("state: batch of %d bytes is larger than a record may be", len(p.enc)))
			continue
		}
		if n := len(buf) - rec - recordHeader; n > 0 && n+len(p.enc) > groupRecord {
			sealRecord(buf[rec:])
			rec = len(buf)
			buf = append(buf, make([]byte, recordHeader)...)
		}
		grow += p.grow
		buf = append(buf, p.enc...)
		accepted = append(accepted, p)
	}
	d.buf = buf
	if cap(d.buf) > 4<<20 {
		d.buf = nil
	}
	if len(accepted) == 0 {
		return
	}
	sealRecord(buf[rec:])
	err := d.write(d.f, buf)
	if err == nil {
		err = d.fdatasync(d.f)
	}
	if err != nil {
		d.st.werr.Add(1)
		d.broken = true
		err = fmt.Errorf("state: append to %s: %w", filepath.Join(d.dir, logName(d.seq)), err)
		d.logf("%v", err)
		for _, p := range accepted {
			p.done(err)
		}
		return
	}
	d.size += int64(len(buf))
	d.logBytes += int64(len(buf))
	msgs := 0
	for _, p := range accepted {
		if err := d.im.applyBatches(p.enc, true); err != nil {
			// Cannot happen for a batch this package encoded; replay would
			// stop at the same place, so say so loudly.
			d.logf("state: apply own batch: %v", err)
		}
		msgs += p.msgs
	}
	d.st.batches.Add(uint64(len(accepted)))
	d.st.msgs.Add(uint64(msgs))
	d.st.live.Store(d.im.bytes)
	d.st.disk.Store(d.snapBytes + d.logBytes)
	for _, p := range accepted {
		p.done(nil)
	}
}

func (d *Durable) write(f *os.File, p []byte) error {
	if d.opts.Fault != nil {
		if err := d.opts.Fault(FaultWrite); err != nil {
			n, _ := f.Write(p[:len(p)/2])
			d.st.bytes.Add(uint64(n))
			return err
		}
	}
	n, err := f.Write(p)
	d.st.bytes.Add(uint64(n))
	return err
}

func (d *Durable) fsync(f *os.File) error {
	if d.opts.Fault != nil {
		if err := d.opts.Fault(FaultSync); err != nil {
			return err
		}
	}
	d.st.fsyncs.Add(1)
	return f.Sync()
}

// fdatasync is enough for appends: the size change it carries is metadata
// fdatasync does flush.
func (d *Durable) fdatasync(f *os.File) error {
	if d.opts.Fault != nil {
		if err := d.opts.Fault(FaultSync); err != nil {
			return err
		}
	}
	d.st.fsyncs.Add(1)
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

func (d *Durable) syncDir(dir string) error {
	if d.opts.Fault != nil {
		if err := d.opts.Fault(FaultSync); err != nil {
			return err
		}
	}
	d.st.fsyncs.Add(1)
	return syncDir(dir)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// roll starts log seq+1, saying in its header how much of the current log
// counts. It is created under a temporary name and renamed once its header is
// on disk, so a log file never has a torn header.
func (d *Durable) roll() error {
	seq := d.seq + 1
	path := filepath.Join(d.dir, logName(seq))
	f, placed, err := d.createSynced(path, fileHeader{kind: kindLog, seq: seq, prevLen: uint64(d.size)})
	if err != nil {
		d.st.werr.Add(1)
		if placed {
			// The new log may be on disk (its directory fsync failed after
			// the rename), and its header says the current log ends here:
			// whatever is appended to the current log from now on would be
			// ignored by recovery. Nothing more goes into it; the next
			// batch retries the roll, which replaces the new log's header.
			d.broken = true
		}
		return fmt.Errorf("state: start %s: %w", path, err)
	}
	if d.f != nil {
		d.f.Close()
	}
	d.f, d.seq, d.size, d.broken = f, seq, headerSize, false
	d.logBytes += headerSize
	return nil
}

// createSynced creates path (through path.tmp) holding just h, durably.
// placed reports whether path may exist after a failure: the rename was done
// but the directory fsync that makes it durable failed.
func (d *Durable) createSynced(path string, h fileHeader) (f *os.File, placed bool, err error) {
	tmp := path + ".tmp"
	f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, false, err
	}
	err = d.write(f, h.append(nil))
	if err == nil {
		err = d.fsync(f)
	}
	if err == nil {
		err = os.Rename(tmp, path)
		placed = err == nil
	}
	if err == nil {
		err = d.syncDir(d.dir)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, placed, err
	}
	return f, true, nil
}
