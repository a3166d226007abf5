package state

import (
	"testing"
)

// FuzzReplay feeds arbitrary bytes to the record scanner and the batch decoder
// as start-up does: whatever a damaged card returns, replay must end in an
// error or a state, never a panic.
func FuzzReplay(f *testing.F) {
	g := newGen(5)
	for range 8 {
		enc, _, _, err := appendBatch(nil, g.batch())
		if err != nil {
			f.Fatal(err)
		}
		rec := append(make([]byte, recordHeader), enc...)
		sealRecord(rec)
		f.Add(rec)
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		im := newImage()
		scanRecords(data, 0, func(p []byte) error { return im.applyBatches(p, true) })
		im.applyBatches(data, false)
		im.collectAll()
		im.snapshot()
		im.freeze()
	})
}
