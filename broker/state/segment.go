package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Files of a durable store directory:
//
//	log-<seq>   append-only log of records, one per group commit
//	snap-<seq>  the live state as of the start of log-<seq>, written by compaction
//	*.tmp       a file being created; deleted at start-up
//	LOCK        held with flock while a process has the store open
//
// Every file starts with a 32-byte header:
//
//	magic "GWDSTATE" | version u16 | kind u8 | 0 | seq u64 | prevLen u64 | crc32c u32
//
// prevLen (logs only) is how many bytes of the previous log count: a log is
// started by compaction, after a write error or after a torn tail was found at
// start-up, and whatever the previous log holds past prevLen (bytes of batches
// that were reported failed) is ignored. Records follow the header:
//
//	length u32 | crc32c(length, payload) u32 | payload (batches, concatenated)
//
// All integers in headers are little-endian.
//
// What recovery trusts, and the order of writes that makes it right after a
// crash at any point:
//
//   - A batch is acknowledged only after its record is written to the current
//     log and fdatasynced; the record lies below the log's valid length.
//   - A new log is written and fsynced as log-<seq>.tmp, renamed, and the
//     directory fsynced; only then does the writer append to it. Its prevLen
//     is the current log's valid length, and nothing is appended to the
//     current log once the new log may exist on disk (a failed directory
//     fsync after the rename leaves the store broken until a roll succeeds).
//   - A snapshot holds the state as of the roll to log-<seq> (frozen on the
//     writer goroutine right after the roll). It is written and fsynced as
//     snap-<seq>.tmp, renamed and the directory fsynced before any log or
//     snapshot older than <seq> is deleted.
//   - Recovery uses the newest snapshot and the logs from its seq on, which
//     must be contiguous; each log counts up to the prevLen of the next. Only
//     the last log may end in a torn record. A bad record there followed by
//     a valid one is cut like a tear, but reported as damage, with a copy of
//     the log kept aside (see recoverDir).
const (
	headerSize   = 32
	recordHeader = 8
	maxRecord    = 1 << 30
	fileVersion  = 1
	kindLog      = 1
	kindSnapshot = 2
)

var magic = [8]byte{'G', 'W', 'D', 'S', 'T', 'A', 'T', 'E'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type fileHeader struct {
	kind    byte
	seq     uint64
	prevLen uint64
}

func (h fileHeader) append(b []byte) []byte {
	start := len(b)
	b = append(b, magic[:]...)
	b = binary.LittleEndian.AppendUint16(b, fileVersion)
	b = append(b, h.kind, 0)
	b = binary.LittleEndian.AppendUint64(b, h.seq)
	b = binary.LittleEndian.AppendUint64(b, h.prevLen)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

func parseHeader(b []byte) (fileHeader, error) {
	if len(b) < headerSize {
		return fileHeader{}, fmt.Errorf("file of %d bytes is shorter than its header", len(b))
	}
	if [8]byte(b[:8]) != magic {
		return fileHeader{}, fmt.Errorf("bad magic %q", b[:8])
	}
	if crc32.Checksum(b[:28], castagnoli) != binary.LittleEndian.Uint32(b[28:32]) {
		return fileHeader{}, errors.New("header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint16(b[8:10]); v != fileVersion {
		return fileHeader{}, fmt.Errorf("format version %d, this build reads %d", v, fileVersion)
	}
	return fileHeader{
		kind:    b[10],
		seq:     binary.LittleEndian.Uint64(b[12:20]),
		prevLen: binary.LittleEndian.Uint64(b[20:28]),
	}, nil
}

// sealRecord fills in the record header reserved at rec[:8].
func sealRecord(rec []byte) {
	n := uint32(len(rec) - recordHeader)
	binary.LittleEndian.PutUint32(rec[0:4], n)
	c := crc32.Update(0, castagnoli, rec[0:4])
	c = crc32.Update(c, castagnoli, rec[recordHeader:])
	binary.LittleEndian.PutUint32(rec[4:8], c)
}

// scanRecords calls fn with the payload of each valid record of data from off
// on. It returns where the valid records end and why it stopped there (nil when
// it reached the end of data). A payload fn rejects counts as invalid.
func scanRecords(data []byte, off int, fn func([]byte) error) (int, error) {
	for off < len(data) {
		if len(data)-off < recordHeader {
			return off, &cutOff{fmt.Sprintf("record header cut off at offset %d", off)}
		}
		n := binary.LittleEndian.Uint32(data[off:])
		if n == 0 || n > maxRecord {
			return off, fmt.Errorf("bad record length %d at offset %d", n, off)
		}
		if uint64(len(data)-off-recordHeader) < uint64(n) {
			return off, &cutOff{fmt.Sprintf("record of %d bytes cut off at offset %d", n, off)}
		}
		payload := data[off+recordHeader : off+recordHeader+int(n)]
		c := crc32.Update(0, castagnoli, data[off:off+4])
		c = crc32.Update(c, castagnoli, payload)
		if c != binary.LittleEndian.Uint32(data[off+4:]) {
			return off, fmt.Errorf("record checksum mismatch at offset %d", off)
		}
		if err := fn(payload); err != nil {
			return off, fmt.Errorf("record at offset %d: %w", off, err)
		}
		off += recordHeader + int(n)
	}
	return off, nil
}

// cutOff is where scanRecords stops at a record that runs past the end of the
// data: what a write torn by a crash leaves.
type cutOff struct{ msg string }

func (e *cutOff) Error() string { return e.msg }

// resyncBudget bounds the bytes validRecordAfter checksums, so that a long
// torn tail cannot make start-up slow.
const resyncBudget = 64 << 20

// validRecordAfter looks for a record with a matching checksum starting at
// any offset after stop, and returns the first one's offset.
func validRecordAfter(data []byte, stop int) (int, bool) {
	budget := resyncBudget
	for off := stop + 1; off+recordHeader < len(data) && budget > 0; off++ {
		n := binary.LittleEndian.Uint32(data[off:])
		if n == 0 || uint64(n) > uint64(len(data)-off-recordHeader) {
			continue
		}
		payload := data[off+recordHeader : off+recordHeader+int(n)]
		budget -= len(payload)
		c := crc32.Update(0, castagnoli, data[off:off+4])
		if crc32.Update(c, castagnoli, payload) == binary.LittleEndian.Uint32(data[off+4:]) {
			return off, true
		}
	}
	return 0, false
}

func logName(seq uint64) string  { return fmt.Sprintf("log-%016x", seq) }
func snapName(seq uint64) string { return fmt.Sprintf("snap-%016x", seq) }

// damage is a store that cannot be read as it is: the directory is moved aside.
type damage struct{ reason string }

func (e *damage) Error() string { return e.reason }

func damagedf(format string, args ...any) error {
	return &damage{reason: fmt.Sprintf(format, args...)}
}

// recovered is what start-up found in a store directory.
type recovered struct {
	im       *image
	fresh    bool   // no log at all
	lastSeq  uint64 // the last log
	validLen int64  // where its valid records end
	fileLen  int64  // its size on disk
	firstLog uint64
	logBytes int64 // valid bytes in logs from firstLog on
	snapSeq  uint64
	snapLen  int64
	obsolete []string // files left over by an interrupted compaction
	temp     []string // *.tmp files left over by an interrupted create
	tornTail string   // why the last log was cut, if it was
	// salvaged says why the last log was cut although a valid record
	// follows the cut: damage inside it rather than a torn final write.
	salvaged string
}

// recoverDir reads the store in dir and changes nothing in it: the files it
// finds obsolete or temporary are listed for the caller to delete once the
// whole store has been read. Errors of type *damage mean the contents are not
// a store this build can trust; other errors are I/O errors (the directory or
// a file could not be listed, opened or read), which say nothing about the
// contents.
func recoverDir(dir string) (*recovered, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var logs, snaps []uint64
	var temp []string
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if strings.HasSuffix(name, ".tmp") {
			temp = append(temp, name)
			continue
		}
		var list *[]uint64
		var hex string
		switch {
		case strings.HasPrefix(name, "log-"):
			list, hex = &logs, name[4:]
		case strings.HasPrefix(name, "snap-"):
			list, hex = &snaps, name[5:]
		default:
			continue
		}
		seq, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || len(hex) != 16 {
			return nil, damagedf("unexpected file %s", name)
		}
		*list = append(*list, seq)
	}
	slices.Sort(logs)
	slices.Sort(snaps)

	r := &recovered{im: newImage(), temp: temp}
	if len(snaps) > 0 {
		r.snapSeq = snaps[len(snaps)-1]
		for _, s := range snaps[:len(snaps)-1] {
			r.obsolete = append(r.obsolete, snapName(s))
		}
		if err := r.readSnapshot(filepath.Join(dir, snapName(r.snapSeq))); err != nil {
			return nil, err
		}
	}
	first := 0
	for first < len(logs) && logs[first] < r.snapSeq {
		r.obsolete = append(r.obsolete, logName(logs[first]))
		first++
	}
	logs = logs[first:]
	if len(logs) == 0 {
		if r.snapSeq != 0 {
			return nil, damagedf("%s has no %s", snapName(r.snapSeq), logName(r.snapSeq))
		}
		r.fresh = true
		return r, nil
	}
	want := r.snapSeq
	if want == 0 {
		want = 1
	}
	for i, seq := range logs {
		if seq != want+uint64(i) {
			return nil, damagedf("%s is missing", logName(want+uint64(i)))
		}
	}
	r.firstLog = logs[0]

	// Each log's length is bounded by the next one's header.
	data, _, err := readSegment(dir, logs[0], kindLog)
	if err != nil {
		return nil, err
	}
	for i, seq := range logs {
		last := i == len(logs)-1
		limit := len(data)
		var next []byte
		if !last {
			var nh fileHeader
			next, nh, err = readSegment(dir, logs[i+1], kindLog)
			if err != nil {
				return nil, err
			}
			if nh.prevLen < headerSize || nh.prevLen > uint64(len(data)) {
				return nil, damagedf("%s: says %s holds %d bytes, it has %d", logName(logs[i+1]), logName(seq), nh.prevLen, len(data))
			}
			limit = int(nh.prevLen)
		}
		end, stop := scanRecords(data[:limit], headerSize, func(p []byte) error {
			return r.im.applyBatches(p, true)
		})
		if stop != nil {
			if !last || errors.Is(stop, errCorrupt) {
				return nil, damagedf("%s: %v", logName(seq), stop)
			}
			// A process crash tears only the last write, and a record cut
			// off by the end of the file is such a tear (what follows it
			// is its own payload, so it is not searched). A bad length or
			// checksum followed by a valid record is either a power cut
			// that persisted the pages of the last, never acknowledged,
			// write out of order, or damage to acknowledged records. The
			// two cannot be told apart here, and moving the whole store
			// aside would lose far more than the batches after the cut in
			// either case: the log is cut there all the same, and the cut
			// is reported as damage with a copy of the log kept.
			var cut *cutOff
			if !errors.As(stop, &cut) {
				if off, ok := validRecordAfter(data, end); ok {
					r.salvaged = fmt.Sprintf("%s: %v, but a valid record follows at offset %d", logName(seq), stop, off)
				}
			}
			r.tornTail = fmt.Sprintf("%s: %v", logName(seq), stop)
		}
		r.logBytes += int64(end)
		if last {
			r.lastSeq, r.validLen, r.fileLen = seq, int64(end), int64(len(data))
		}
		data = next
	}
	return r, nil
}

func readSegment(dir string, seq uint64, kind byte) ([]byte, fileHeader, error) {
	name := logName(seq)
	if kind == kindSnapshot {
		name = snapName(seq)
	}
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fileHeader{}, damagedf("%s is missing", name)
		}
		return nil, fileHeader{}, err
	}
	h, err := parseHeader(data)
	if err != nil {
		return nil, h, damagedf("%s: %v", name, err)
	}
	if h.kind != kind || h.seq != seq {
		return nil, h, damagedf("%s: header says kind %d seq %d", name, h.kind, h.seq)
	}
	return data, h, nil
}

func (r *recovered) readSnapshot(path string) error {
	data, _, err := readSegment(filepath.Dir(path), r.snapSeq, kindSnapshot)
	if err != nil {
		return err
	}
	complete := false
	_, stop := scanRecords(data, headerSize, func(p []byte) error {
		if complete {
			return errors.New("data after the end of the snapshot")
		}
		if err := r.im.applyBatches(p, false); err != nil {
			return err
		}
		complete = r.im.sawEnd
		return nil
	})
	if stop != nil {
		return damagedf("%s: %v", snapName(r.snapSeq), stop)
	}
	if !complete {
		return damagedf("%s: incomplete snapshot", snapName(r.snapSeq))
	}
	r.im.collectAll()
	r.snapLen = int64(len(data))
	return nil
}
