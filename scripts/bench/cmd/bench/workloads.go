package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"gatewayd/scripts/bench/internal/load"
	"gatewayd/scripts/bench/internal/procstat"
)

type kind int

const (
	flow kind = iota
	idle
)

// workload is one measured scenario.
type workload struct {
	name  string
	title string
	kind  kind
	pubs  int
	subs  int
	qos   byte
	rate  float64 // per publisher, messages/s; 0 = saturated
	win   int     // QoS 1 window per publisher
	// durable: the subscriber keeps a persistent session (clean session false).
	durable bool
	// filters > 0: many-topics; that many subscriptions spread over subs,
	// each published topic matching exactly one of them.
	filters int
	conns   int // idle connections
	// forwarderNA says why the forwarders cannot run this workload.
	forwarderNA string
}

func (w *workload) paced() bool     { return w.kind == flow && w.rate > 0 }
func (w *workload) saturated() bool { return w.kind == flow && w.rate == 0 }

func workloads(smoke bool) []workload {
	idleSmall, idleLarge, filters := 1000, 10000, 100000
	if smoke {
		idleSmall, idleLarge, filters = 50, 200, 2000
	}
	return []workload{
		{name: "paced-qos0", title: "QoS 0 fan-in, 8 publishers × 1000 msg/s → 1 subscriber", kind: flow, pubs: 8, subs: 1, rate: 1000},
		{name: "paced-qos1", title: "QoS 1 fan-in, 4 publishers × 1000 msg/s (window 32) → 1 subscriber", kind: flow, pubs: 4, subs: 1, qos: 1, rate: 1000, win: 32},
		{name: "sat-qos0-fanin", title: "QoS 0 fan-in, 8 publishers as fast as possible → 1 subscriber", kind: flow, pubs: 8, subs: 1},
		{name: "sat-qos0-fanout", title: "QoS 0 fan-out, 1 publisher as fast as possible → 16 subscribers", kind: flow, pubs: 1, subs: 16},
		{name: "sat-qos1-fanin", title: "QoS 1 fan-in, 4 publishers (window 128) → 1 subscriber", kind: flow, pubs: 4, subs: 1, qos: 1, win: 128},
		{name: "durable-qos1", title: "QoS 1 fan-in, 4 publishers (window 128) → 1 persistent-session subscriber (clean session false)", kind: flow, pubs: 4, subs: 1, qos: 1, win: 128, durable: true},
		{name: "idle-" + strconv.Itoa(idleSmall), title: fmt.Sprintf("%d idle connections", idleSmall), kind: idle, conns: idleSmall},
		{name: "idle-" + strconv.Itoa(idleLarge), title: fmt.Sprintf("%d idle connections", idleLarge), kind: idle, conns: idleLarge},
		{name: "many-topics", title: fmt.Sprintf("%d subscriptions (75%% wildcards) on 10 subscribers; 4 QoS 0 publishers as fast as possible, each message matching one subscription", filters),
			kind: flow, pubs: 4, subs: 10, filters: filters, forwarderNA: "the forwarders do no topic matching"},
	}
}

// result is one run of one workload on one broker.
type result struct {
	broker, workload string
	round            int
	na               string // not applicable / not available: no figures
	aborted          bool   // ended before measuring: no figures
	errs             []string

	sent, expected, unique   uint64
	dups, reordered, corrupt uint64
	misrouted, lost, unacked uint64
	msgPerSec                float64
	p50, p99, p999           time.Duration
	cpuSec                   float64
	cpuPerM                  float64 // broker CPU seconds per million delivered
	genCPUPct                float64 // load generator CPU, % of one core
	otherPct                 float64 // other processes' CPU, % of the whole machine
	peakRSS, steadyRSS       uint64
	idleBefore, idleAfter    uint64
	perConn                  float64
	subscribeSec             float64
	dataBytes                int64 // written under the broker's data directory
	seconds                  float64
}

func (r *result) fail(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// abort records why the run ended before it measured anything.
func (r *result) abort(format string, args ...any) {
	r.fail(format, args...)
	r.aborted = true
}

// sizes bounds a run.
type sizes struct {
	duration  time.Duration
	maxPerPub uint64        // saturated: at most this many messages per publisher
	quiet     time.Duration // drain ends after this long without a new message
	settle    time.Duration // idle: wait before reading RSS
}

var clk = procstat.ClockTicks()

// sampler reads a process every interval until stopped.
type sampler struct {
	pid     int
	mu      sync.Mutex
	samples []timedSample
	stop    chan struct{}
	done    chan struct{}
}

type timedSample struct {
	at int64
	procstat.Sample
}

func startSampler(pid int, every time.Duration) *sampler {
	s := &sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if x, err := procstat.Read(pid); err == nil {
				s.mu.Lock()
				s.samples = append(s.samples, timedSample{load.Now(), x})
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) finish() []timedSample {
	close(s.stop)
	<-s.done
	if x, err := procstat.Read(s.pid); err == nil {
		s.samples = append(s.samples, timedSample{load.Now(), x})
	}
	return s.samples
}

func selfCPU() uint64 {
	x, err := procstat.Read(os.Getpid())
	if err != nil {
		return 0
	}
	return x.CPUTicks
}

func runWorkload(ctx context.Context, w *workload, p *proc, addr string, sz sizes, r *result) {
	switch w.kind {
	case idle:
		runIdle(ctx, w, p, addr, sz, r)
	default:
		runFlow(ctx, w, p, addr, sz, r)
	}
	if !p.alive() {
		r.fail("broker exited during the run (%v)%s", p.err, p.logTail())
	}
	r.dataBytes = dirSize(filepath.Join(p.dir, "data"))
}

// dirSize is the total size of the regular files under dir (0 if none).
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

func runIdle(ctx context.Context, w *workload, p *proc, addr string, sz sizes, r *result) {
	sleepCtx(ctx, sz.settle)
	before, err := procstat.Read(p.pid)
	if err != nil {
		r.abort("read broker: %v", err)
		return
	}
	t0 := time.Now()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(w.conns)*5*time.Millisecond)
	defer cancel()
	conns, err := load.OpenIdle(octx, addr, fmt.Sprintf("idle-%d", r.round), w.conns, 16)
	if err != nil {
		r.abort("%v", err)
		return
	}
	defer load.CloseAll(conns)
	r.seconds = time.Since(t0).Seconds()
	sleepCtx(ctx, sz.settle)
	after, err := procstat.Read(p.pid)
	if err != nil {
		r.abort("read broker: %v", err)
		return
	}
	if err := handshake(addr); err != nil {
		r.fail("broker unresponsive with %d idle connections: %v", w.conns, err)
	}
	r.idleBefore, r.idleAfter = before.RSS, after.RSS
	r.peakRSS, r.steadyRSS = after.HWM, after.RSS
	r.perConn = (float64(after.RSS) - float64(before.RSS)) / float64(w.conns)
	r.expected, r.unique = uint64(w.conns), uint64(len(conns))
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// manyTopics returns the filters and the published topics of the
// many-topics workload: topic i is matched by filter i and by no other.
func manyTopics(n int) (filters, topics []string) {
	filters = make([]string, n)
	topics = make([]string, n)
	for i := 0; i < n; i++ {
		topics[i] = fmt.Sprintf("bench/%d/x/y", i)
		switch i % 4 {
		case 0:
			filters[i] = topics[i]
		case 1:
			filters[i] = fmt.Sprintf("bench/%d/+/y", i)
		case 2:
			filters[i] = fmt.Sprintf("bench/%d/#", i)
		case 3:
			filters[i] = fmt.Sprintf("+/%d/x/+", i)
		}
	}
	return filters, topics
}

func runFlow(ctx context.Context, w *workload, p *proc, addr string, sz sizes, r *result) {
	tag := fmt.Sprintf("%s-%s-r%d", r.broker, w.name, r.round)
	topics := []string{"bench/" + w.name}
	filtersOf := func(i int) []string { return topics }
	var owns func(sub int) func(pub uint32, seq uint64) bool
	stride := uint64(1)
	if w.filters > 0 {
		var filters []string
		filters, topics = manyTopics(w.filters)
		filtersOf = func(i int) []string {
			var mine []string
			for j := i; j < len(filters); j += w.subs {
				mine = append(mine, filters[j])
			}
			return mine
		}
		stride = uint64(w.pubs)
		owns = func(sub int) func(uint32, uint64) bool {
			return func(pub uint32, seq uint64) bool {
				return int((uint64(pub)+seq*stride)%uint64(len(topics)))%w.subs == sub
			}
		}
	}

	// Subscribers first, all subscribed before anything is published.
	t0 := time.Now()
	subs := make([]*load.Subscriber, w.subs)
	var subErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := load.SubscriberConfig{
				Addr: addr, ClientID: fmt.Sprintf("%s-sub%d", tag, i), Clean: !w.durable,
				Filters: filtersOf(i), QoS: w.qos, Publishers: w.pubs,
			}
			if owns != nil {
				cfg.Owns = owns(i)
			}
			s, err := load.DialSubscriber(ctx, cfg)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && subErr == nil {
				subErr = err
			}
			subs[i] = s
		}()
	}
	wg.Wait()
	r.subscribeSec = time.Since(t0).Seconds()
	started := false
	defer func() {
		for _, s := range subs {
			if s != nil {
				if err := s.Close(started); err != nil {
					r.fail("subscriber: %v", err)
				}
			}
		}
	}()
	if subErr != nil {
		r.abort("subscribe: %v", subErr)
		return
	}

	pubs := make([]*load.Publisher, w.pubs)
	defer func() {
		for _, pb := range pubs {
			if pb != nil {
				if err := pb.Close(); err != nil {
					r.fail("publisher: %v", err)
				}
			}
		}
	}()
	maxPer := sz.maxPerPub
	if w.rate > 0 {
		maxPer = uint64(w.rate*sz.duration.Seconds()) + 1
	}
	for i := range pubs {
		pb, err := load.DialPublisher(ctx, load.PublisherConfig{
			Addr: addr, ClientID: fmt.Sprintf("%s-pub%d", tag, i), ID: uint32(i),
			Topics: topics, Stride: stride, QoS: w.qos, Rate: w.rate, Window: w.win,
			Batch: 64, Max: maxPer,
		})
		if err != nil {
			r.abort("publisher: %v", err)
			return
		}
		pubs[i] = pb
	}
	for _, s := range subs {
		go s.Run()
	}
	started = true

	before, err := procstat.Read(p.pid)
	if err != nil {
		r.abort("read broker: %v", err)
		return
	}
	smp := startSampler(p.pid, 100*time.Millisecond)
	gen0 := selfCPU()
	busy0, total0, _ := procstat.ReadCPUTotal()
	start := load.Now()
	wall0 := time.Now()

	stop := make(chan struct{})
	drainMax := sz.duration*2 + 10*time.Second
	drainBy := time.Now().Add(sz.duration + drainMax)
	var pwg sync.WaitGroup
	for _, pb := range pubs {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			if err := pb.Run(stop, drainBy); err != nil {
				mu.Lock()
				r.fail("publish: %v", err)
				mu.Unlock()
			}
		}()
	}
	timer := time.NewTimer(sz.duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	close(stop)
	pwg.Wait()
	sendEnd := load.Now()

	for _, pb := range pubs {
		r.sent += pb.Sent()
		if w.qos > 0 {
			r.unacked += pb.Sent() - pb.Acked()
		}
	}
	if w.filters > 0 {
		r.expected = r.sent
	} else {
		r.expected = r.sent * uint64(w.subs)
	}
	total := func() (n uint64, last int64) {
		for _, s := range subs {
			n += s.Unique()
			last = max(last, s.Last())
		}
		return
	}
	progress, progressAt := uint64(0), time.Now()
	for ctx.Err() == nil && time.Now().Before(drainBy) {
		n, _ := total()
		if n >= r.expected {
			break
		}
		if n != progress {
			progress, progressAt = n, time.Now()
		} else if time.Since(progressAt) > sz.quiet {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	after, _ := procstat.Read(p.pid)
	samples := smp.finish()
	gen1 := selfCPU()
	busy1, total1, _ := procstat.ReadCPUTotal()
	wall := time.Since(wall0).Seconds()

	// Stop the readers before looking at their verifiers.
	_, lastRecv := total()
	for _, s := range subs {
		if err := s.Close(true); err != nil {
			r.fail("subscriber: %v", err)
		}
	}
	lat := subs[0].V.Latency
	for i, s := range subs {
		v := s.V
		r.unique += v.Unique
		r.dups += v.Dups
		r.reordered += v.Reordered
		r.corrupt += v.Corrupt
		r.misrouted += v.Misrouted
		if i > 0 {
			lat.Merge(v.Latency)
		}
	}
	subs = nil // closed: the deferred close skips them
	if lastRecv > start {
		r.msgPerSec = float64(r.unique) / (float64(lastRecv-start) / 1e9)
	}
	if r.unique < r.expected {
		r.lost = r.expected - r.unique
	}
	r.p50, r.p99, r.p999 = lat.Quantile(0.5), lat.Quantile(0.99), lat.Quantile(0.999)
	r.seconds = wall
	r.cpuSec = float64(after.CPUTicks-before.CPUTicks) / float64(clk)
	if r.unique > 0 {
		r.cpuPerM = r.cpuSec / float64(r.unique) * 1e6
	}
	r.genCPUPct = float64(gen1-gen0) / float64(clk) / wall * 100
	if total1 > total0 {
		// What the rest of the machine used meanwhile, as a share of all cores.
		other := float64(busy1-busy0) - float64(after.CPUTicks-before.CPUTicks) - float64(gen1-gen0)
		r.otherPct = max(0, other/float64(total1-total0)*100)
	}
	r.peakRSS = after.HWM
	var steady []uint64
	half := start + (sendEnd-start)/2
	for _, s := range samples {
		r.peakRSS = max(r.peakRSS, s.HWM)
		if s.at >= half && s.at <= sendEnd {
			steady = append(steady, s.RSS)
		}
	}
	if len(steady) == 0 && len(samples) > 0 {
		steady = append(steady, samples[len(samples)-1].RSS)
	}
	r.steadyRSS = medianU(steady)
}

func medianU(v []uint64) uint64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]uint64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
