package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// maxLogs starts a compaction when this many logs accumulate (restarts and
// write errors each start one) even if they are small.
const maxLogs = 64

// snapshotRecord is the size a snapshot record grows to before it is sealed.
const snapshotRecord = 256 << 10

var errCompactStopped = errors.New("compaction stopped by Close")

// maybeCompact starts a compaction when the logs hold more than CompactBytes
// beyond the live data. It rolls to a new log, freezes the image as of that
// point and lets another goroutine write it out: the writer goes on at once.
func (d *Durable) maybeCompact() {
	if d.compacting || d.broken {
		return
	}
	// After a failed compaction, the next waits for CompactBytes more log,
	// however many logs there are: a failure that persists (a snapshot
	// larger than the free space) must not roll a log and rewrite the whole
	// state at every commit.
	if d.logBytes < d.compactNext {
		return
	}
	nlogs := d.seq - d.firstLog + 1
	if d.logBytes-d.im.bytes < d.opts.CompactBytes && nlogs < maxLogs {
		return
	}
	base := d.logBytes
	if err := d.roll(); err != nil {
		d.logf("state: compaction: %v", err)
		return
	}
	fr := d.im.freeze()
	d.compacting, d.compactBase = true, base
	d.compactWG.Add(1)
	go func(seq uint64) {
		defer d.compactWG.Done()
		size, err := d.writeSnapshot(seq, fr)
		d.compactDone <- compactResult{seq: seq, size: size, err: err}
	}(d.seq)
}

// compacted takes the result of a compaction (writer goroutine).
func (d *Durable) compacted(r compactResult) {
	d.compacting = false
	if r.err != nil {
		if !errors.Is(r.err, errCompactStopped) {
			d.logf("state: compaction: %v", r.err)
		}
		d.compactNext = d.logBytes + d.opts.CompactBytes
		return
	}
	d.logBytes -= d.compactBase
	d.snapBytes = r.size
	d.firstLog = r.seq
	d.compactNext = 0
	d.st.compactions.Add(1)
	d.st.disk.Store(d.snapBytes + d.logBytes)
}

// writeSnapshot writes fr as snap-<seq> and then deletes the logs and
// snapshots it replaces. It checks stopCompact between records.
func (d *Durable) writeSnapshot(seq uint64, fr *frozen) (int64, error) {
	path := filepath.Join(d.dir, snapName(seq))
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) {
		f.Close()
		os.Remove(tmp)
		return 0, fmt.Errorf("write %s: %w", tmp, err)
	}
	size := int64(0)
	buf := fileHeader{kind: kindSnapshot, seq: seq}.append(make([]byte, 0, snapshotRecord+64<<10))
	if err := d.write(f, buf); err != nil {
		return fail(err)
	}
	size += int64(len(buf))

	// One record holds one batch of ops; the count is patched in when sealed.
	var ops int
	start := func() { buf = append(buf[:0], make([]byte, recordHeader+5)...); ops = 0 }
	flush := func() error {
		if d.stopCompact.Load() {
			return errCompactStopped
		}
		// Shift the ops so that the uvarint count directly precedes them.
		cnt := appendUvarint(nil, uint64(ops))
		body := buf[recordHeader+5:]
		rec := buf[5-len(cnt) : recordHeader+5+len(body)]
		copy(rec[recordHeader:], cnt)
		sealRecord(rec)
		if err := d.write(f, rec); err != nil {
			return err
		}
		size += int64(len(rec))
		start()
		return nil
	}
	add := func(op []byte) error {
		buf = append(buf, op...)
		ops++
		if len(buf) >= snapshotRecord {
			return flush()
		}
		return nil
	}
	start()
	var scratch []byte
	for _, enc := range fr.sessions {
		if err := add(enc); err != nil {
			return fail(err)
		}
	}
	for _, enc := range fr.msgs {
		if err := add(enc); err != nil {
			return fail(err)
		}
	}
	for _, r := range fr.retained {
		scratch = appendUvarint(appendString(append(scratch[:0], byte(OpSetRetained)), r.topic), r.id)
		if err := add(scratch); err != nil {
			return fail(err)
		}
	}
	for _, q := range fr.queues {
		for i := range q.out {
			scratch = appendOutbound(appendString(append(scratch[:0], byte(OpEnqueue)), q.clientID), &q.out[i])
			if err := add(scratch); err != nil {
				return fail(err)
			}
		}
	}
	for _, in := range fr.inbound {
		for _, id := range in.ids {
			scratch = appendUvarint(appendString(append(scratch[:0], byte(OpPutInbound)), in.clientID), uint64(id))
			if err := add(scratch); err != nil {
				return fail(err)
			}
		}
	}
	for _, enc := range fr.wills {
		if err := add(enc); err != nil {
			return fail(err)
		}
	}
	if err := add(appendUvarint([]byte{byte(opNextID)}, fr.nextID)); err != nil {
		return fail(err)
	}
	if err := add([]byte{byte(opSnapEnd)}); err != nil {
		return fail(err)
	}
	if ops > 0 {
		if err := flush(); err != nil {
			return fail(err)
		}
	}
	if err := d.fsync(f); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return 0, err
	}
	if err := d.syncDir(d.dir); err != nil {
		// The snapshot may or may not survive a crash; either way the logs
		// it replaces are still there, so keep them.
		return 0, fmt.Errorf("sync %s: %w", d.dir, err)
	}
	// Everything before seq is now redundant.
	entries, _ := os.ReadDir(d.dir)
	for _, e := range entries {
		name := e.Name()
		var s uint64
		if _, err := fmt.Sscanf(name, "log-%016x", &s); err == nil && len(name) == 20 && s < seq {
			os.Remove(filepath.Join(d.dir, name))
		} else if _, err := fmt.Sscanf(name, "snap-%016x", &s); err == nil && len(name) == 21 && s < seq {
			os.Remove(filepath.Join(d.dir, name))
		}
	}
	d.syncDir(d.dir)
	return size, nil
}
