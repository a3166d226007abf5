package state

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The batches of one durable QoS 1 message as the broker commits them: on
// PUBLISH the message and its place in a persistent session's queue, on the
// subscriber's PUBACK the removal from the queue (which drops the message).
const (
	benchTopic   = "sensors/gw-0001/temp-03" // 23 bytes
	benchPayload = 64                        // a small JSON reading
	benchClient  = "dashboard-01"
)

func benchBatches(id uint64, payload []byte) (pub, ack *Batch) {
	m := &Message{ID: id, Topic: benchTopic, Payload: payload, QoS: 1, Origin: "sensor-node-7", Created: ts(int64(id))}
	pub = &Batch{Ops: []Op{
		{Kind: OpPutMessage, MessageID: id, Message: m},
		{Kind: OpEnqueue, ClientID: benchClient, Outbound: &Outbound{Seq: id, MessageID: id, QoS: 1}},
	}}
	ack = &Batch{Ops: []Op{{Kind: OpDequeue, ClientID: benchClient, Seq: id}}}
	return pub, ack
}

// procIO reads this process's I/O counters: wchar is what was handed to
// write(2) and pwrite(2); write_bytes is what was dirtied in the page cache and
// so goes to the device (whole pages, before the file system's journal).
func procIO(tb testing.TB) (wchar, writeBytes uint64) {
	f, err := os.Open("/proc/self/io")
	if err != nil {
		tb.Skipf("no /proc/self/io: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ": ")
		n, _ := strconv.ParseUint(v, 10, 64)
		switch k {
		case "wchar":
			wchar = n
		case "write_bytes":
			writeBytes = n
		}
	}
	return wchar, writeBytes
}

type benchTarget struct {
	store  Store
	fsyncs func() uint64
}

// runCommitBench publishes b.N messages from committers goroutines, each
// waiting for its message to be durable (as a publisher waits for PUBACK),
// then acknowledges each one without waiting (as the subscriber's PUBACK is).
func runCommitBench(b *testing.B, committers int, target benchTarget) {
	payload := []byte(strings.Repeat("{\"t\":21.5,\"h\":40}", 4))[:benchPayload]
	w0, d0 := procIO(b)
	f0 := target.fsyncs()
	b.ResetTimer()
	var next sync.Mutex
	id := uint64(0)
	var acks sync.WaitGroup
	var wg sync.WaitGroup
	for range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				if id >= uint64(b.N) {
					next.Unlock()
					return
				}
				id++
				my := id
				next.Unlock()
				pub, ack := benchBatches(my, payload)
				if err := commitWait(target.store, pub); err != nil {
					b.Error(err)
					return
				}
				acks.Add(1)
				target.store.Commit(ack, func(err error) {
					if err != nil {
						b.Error(err)
					}
					acks.Done()
				})
			}
		}()
	}
	wg.Wait()
	acks.Wait()
	b.StopTimer()
	w1, d1 := procIO(b)
	n := float64(b.N)
	b.ReportMetric(float64(target.fsyncs()-f0)/n, "fsyncs/msg")
	b.ReportMetric(float64(w1-w0)/n, "B/msg")
	b.ReportMetric(float64(d1-d0)/n, "dev-B/msg")
	b.ReportMetric(float64(w1-w0)/n/float64(len(benchTopic)+benchPayload), "x(topic+payload)")
}

// BenchmarkDurableCommit is the store the broker uses.
func BenchmarkDurableCommit(b *testing.B) {
	for _, c := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("committers=%d", c), func(b *testing.B) {
			d := open(b, filepath.Join(b.TempDir(), "store"), DurableOptions{})
			defer mustClose(b, d)
			runCommitBench(b, c, benchTarget{store: d, fsyncs: func() uint64 { return d.Stats().Fsyncs }})
		})
	}
}

// BenchmarkBboltCommit commits the same batches, with the same group commit,
// to a minimal bbolt layout (a bucket of messages by id, a bucket of queue
// entries by client and seq): the alternative the durable store was chosen
// over. bbolt writes every dirty B+tree page and the meta page per
// transaction and fdatasyncs twice.
func BenchmarkBboltCommit(b *testing.B) {
	for _, c := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("committers=%d", c), func(b *testing.B) {
			s := openBoltStore(b, filepath.Join(b.TempDir(), "bolt.db"))
			defer s.Close()
			runCommitBench(b, c, benchTarget{store: s, fsyncs: func() uint64 {
				s.mu.Lock()
				defer s.mu.Unlock()
				return 2 * s.commits
			}})
		})
	}
}

type boltStore struct {
	db      *bolt.DB
	mu      sync.Mutex
	queue   []pending
	commits uint64
	wake    chan struct{}
	quit    chan struct{}
	exited  chan struct{}
}

func openBoltStore(tb testing.TB, path string) *boltStore {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"m", "q"} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	s := &boltStore{db: db, wake: make(chan struct{}, 1), quit: make(chan struct{}), exited: make(chan struct{})}
	go s.writer()
	return s
}

func (s *boltStore) Load() (*Snapshot, error) { return emptySnapshot(), nil }
func (s *boltStore) Durable() bool            { return true }

func (s *boltStore) Commit(b *Batch, done func(error)) {
	enc := encodeBoltOps(b)
	s.mu.Lock()
	s.queue = append(s.queue, pending{enc: enc, done: done})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// encodeBoltOps keeps just what the bbolt layout needs: puts and deletes.
func encodeBoltOps(b *Batch) []byte {
	var out []byte
	for _, op := range b.Ops {
		switch op.Kind {
		case OpPutMessage:
			out = append(out, 'M')
			out = appendBytes(out, appendMessage(nil, op.Message))
			out = binary.BigEndian.AppendUint64(out, op.Message.ID)
		case OpEnqueue:
			out = append(out, 'Q')
			out = appendString(out, op.ClientID)
			out = binary.BigEndian.AppendUint64(out, op.Outbound.Seq)
			out = binary.BigEndian.AppendUint64(out, op.Outbound.MessageID)
		case OpDequeue:
			out = append(out, 'D')
			out = appendString(out, op.ClientID)
			out = binary.BigEndian.AppendUint64(out, op.Seq)
		}
	}
	return out
}

func (s *boltStore) writer() {
	defer close(s.exited)
	for {
		select {
		case <-s.wake:
		case <-s.quit:
			return
		}
		s.mu.Lock()
		group := s.queue
		s.queue = nil
		s.mu.Unlock()
		if len(group) == 0 {
			continue
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			m, q := tx.Bucket([]byte("m")), tx.Bucket([]byte("q"))
			for _, p := range group {
				d := decoder{b: p.enc}
				for !d.done() {
					switch d.byte1() {
					case 'M':
						v := d.raw()
						k := d.b[d.off : d.off+8]
						d.off += 8
						if err := m.Put(k, v); err != nil {
							return err
						}
					case 'Q':
						cid := d.raw()
						k := append(append([]byte{}, cid...), d.b[d.off:d.off+8]...)
						v := d.b[d.off+8 : d.off+16]
						d.off += 16
						if err := q.Put(k, v); err != nil {
							return err
						}
					case 'D':
						cid := d.raw()
						k := append(append([]byte{}, cid...), d.b[d.off:d.off+8]...)
						d.off += 8
						if v := q.Get(k); v != nil {
							if err := m.Delete(v); err != nil {
								return err
							}
						}
						if err := q.Delete(k); err != nil {
							return err
						}
					}
				}
			}
			return nil
		})
		s.mu.Lock()
		s.commits++
		s.mu.Unlock()
		for _, p := range group {
			p.done(err)
		}
	}
}

func (s *boltStore) Close() error {
	close(s.quit)
	<-s.exited
	return s.db.Close()
}
