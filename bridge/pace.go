package bridge

import (
	"context"
	"hash/fnv"
	"sync"
	"time"
)

// pacer is a token bucket: rate tokens a second, at most burst saved up. In
// any one-second window it lets through at most rate+burst sends.
type pacer struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return nil
	}
	burst := max(1, rate)
	return &pacer{rate: rate, burst: burst, tokens: burst}
}

// wait takes a token, sleeping until one is there or ctx ends.
func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	for {
		p.mu.Lock()
		now := time.Now()
		if !p.last.IsZero() {
			p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
		}
		p.last = now
		if p.tokens >= 1 {
			p.tokens--
			p.mu.Unlock()
			return nil
		}
		d := time.Duration((1 - p.tokens) / p.rate * float64(time.Second))
		p.mu.Unlock()
		t := time.NewTimer(max(d, time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// echoes remembers what the bridge published to the cloud on topics it also
// receives from the cloud, so that the copy the cloud sends back is not
// delivered locally again. It stands in for no-local with MQTT 3.1.1 cloud
// brokers, which have no such option. Entries go after echoTTL or when more
// than echoMax are held.
type echoes struct {
	mu   sync.Mutex
	n    map[echoKey]int
	fifo []echoEntry
}

type echoKey struct {
	topic string
	sum   uint64
}

type echoEntry struct {
	key echoKey
	at  time.Time
}

const (
	echoTTL = 2 * time.Minute
	echoMax = 10000
)

func sum(payload []byte) uint64 {
	h := fnv.New64a()
	h.Write(payload)
	return h.Sum64()
}

func (e *echoes) add(topic string, payload []byte) {
	k := echoKey{topic, sum(payload)}
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = make(map[echoKey]int)
	}
	e.n[k]++
	e.fifo = append(e.fifo, echoEntry{k, now})
	for len(e.fifo) > 0 && (len(e.fifo) > echoMax || now.Sub(e.fifo[0].at) > echoTTL) {
		e.forgetLocked(e.fifo[0].key)
		e.fifo = e.fifo[1:]
	}
}

func (e *echoes) forgetLocked(k echoKey) {
	if e.n[k] <= 1 {
		delete(e.n, k)
	} else {
		e.n[k]--
	}
}

// take reports whether topic and payload are an echo, and forgets it.
func (e *echoes) take(topic string, payload []byte) bool {
	k := echoKey{topic, sum(payload)}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n[k] == 0 {
		return false
	}
	e.forgetLocked(k)
	for i, f := range e.fifo {
		if f.key == k {
			e.fifo = append(e.fifo[:i], e.fifo[i+1:]...)
			break
		}
	}
	return true
}
