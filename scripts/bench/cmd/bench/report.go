package main

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"time"
)

// cell is every round of one workload on one broker.
type cell struct {
	w      *workload
	b      *broker
	rounds []*result
}

// na says why the cell has no figures: not available, not applicable, or
// failed in every round; "" when it has figures.
func (c *cell) na() string {
	for _, r := range c.rounds {
		if r.na != "" {
			return r.na
		}
	}
	if len(c.rounds) == 0 {
		return "not run"
	}
	if len(c.ok()) == 0 {
		return "failed: " + oneLine(c.rounds[0].errs[0])
	}
	return ""
}

// failed is true when the broker ran but no round measured anything.
func (c *cell) failed() bool { return strings.HasPrefix(c.na(), "failed: ") }

func (c *cell) ok() []*result {
	var out []*result
	for _, r := range c.rounds {
		if r.na == "" && !r.aborted {
			out = append(out, r)
		}
	}
	return out
}

func (c *cell) med(f func(*result) float64) float64 {
	var v []float64
	for _, r := range c.ok() {
		v = append(v, f(r))
	}
	return median(v)
}

// spread formats the median of f and, with more than one round, its range.
func (c *cell) spread(f func(*result) float64, format func(float64) string) string {
	var v []float64
	for _, r := range c.ok() {
		v = append(v, f(r))
	}
	s := format(median(v))
	if len(v) > 1 {
		lo, hi := v[0], v[0]
		for _, x := range v {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
		s += " (" + format(lo) + "–" + format(hi) + ")"
	}
	return s
}

func (c *cell) sum(f func(*result) uint64) uint64 {
	var n uint64
	for _, r := range c.ok() {
		n += f(r)
	}
	return n
}

func (c *cell) maxU(f func(*result) uint64) uint64 {
	var n uint64
	for _, r := range c.ok() {
		n = max(n, f(r))
	}
	return n
}

// clean is true when every round delivered everything exactly once, in
// order and intact.
func (c *cell) clean() bool {
	rs := c.ok()
	if len(rs) == 0 {
		return false
	}
	for _, r := range rs {
		if r.lost+r.dups+r.reordered+r.corrupt+r.misrouted+r.unacked != 0 || len(r.errs) > 0 {
			return false
		}
	}
	return true
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratio is the median over rounds of a/b for one metric, pairing the runs of
// the same round.
func ratio(a, b *cell, f func(*result) float64) float64 {
	r, _, _ := ratioRange(a, b, f)
	return r
}

// ratioRange is ratio with the lowest and highest per-round ratio.
func ratioRange(a, b *cell, f func(*result) float64) (med, lo, hi float64) {
	nan := math.NaN()
	if a == nil || b == nil || a.na() != "" || b.na() != "" {
		return nan, nan, nan
	}
	byRound := map[int]*result{}
	for _, r := range b.ok() {
		byRound[r.round] = r
	}
	var v []float64
	for _, r := range a.ok() {
		if o, ok := byRound[r.round]; ok && f(o) > 0 {
			v = append(v, f(r)/f(o))
		}
	}
	if len(v) == 0 {
		return nan, nan, nan
	}
	lo, hi = v[0], v[0]
	for _, x := range v {
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return median(v), lo, hi
}

func fmtRate(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 1e6:
		return fmt.Sprintf("%.2f M", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.1f k", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtDur(ns float64) string {
	if math.IsNaN(ns) {
		return "–"
	}
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.0f µs", float64(d)/1e3)
}

func fmtBytes(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case math.Abs(v) >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", v)
}

func fmtCount(n, of uint64) string {
	if n == 0 {
		return "0"
	}
	if of == 0 {
		return fmt.Sprint(n)
	}
	return fmt.Sprintf("%d (%.2f%%)", n, 100*float64(n)/float64(of))
}

type report struct {
	ws      []workload
	bs      []*broker
	cells   map[string]*cell // workload/broker
	started time.Time
	ended   time.Time
	command string
	rounds  int
	dur     time.Duration
	smoke   bool
	armSize int64
	armErr  string
	// load averages at start and end: other work on the machine skews
	// every broker alike only on average.
	loadStart, loadEnd string
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func (rp *report) cell(w, b string) *cell { return rp.cells[w+"/"+b] }

func (rp *report) tables() string {
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }

	p("### Message flow\n\n")
	p("Medians over %d interleaved round(s), with the range over rounds in brackets for msg/s and p99. Lost, duplicate, out-of-order and corrupt are totals over all rounds. Load gen CPU is in percent of one core; others' CPU is what other processes on the machine used during the run, in percent of all cores.\n\n", rp.rounds)
	p("| workload | broker | delivered msg/s | p50 | p99 | p99.9 | broker CPU s / M msgs | peak RSS | steady RSS | lost | dup | out of order | corrupt | load gen CPU | others' CPU |\n")
	p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i := range rp.ws {
		w := &rp.ws[i]
		if w.kind != flow {
			continue
		}
		for _, b := range rp.bs {
			c := rp.cell(w.name, b.name)
			if c == nil {
				continue
			}
			if na := c.na(); na != "" {
				p("| %s | %s | %s | | | | | | | | | | | | |\n", w.name, b.name, na)
				continue
			}
			exp := c.sum(func(r *result) uint64 { return r.expected })
			lost := c.sum(func(r *result) uint64 { return r.lost })
			p("| %s | %s | %s | %s | %s | %s | %.2f | %s | %s | %s | %s | %s | %s | %.0f%% | %.0f%% |\n",
				w.name, b.name,
				c.spread(func(r *result) float64 { return r.msgPerSec }, fmtRate),
				fmtDur(c.med(func(r *result) float64 { return float64(r.p50) })),
				c.spread(func(r *result) float64 { return float64(r.p99) }, fmtDur),
				fmtDur(c.med(func(r *result) float64 { return float64(r.p999) })),
				c.med(func(r *result) float64 { return r.cpuPerM }),
				fmtBytes(float64(c.maxU(func(r *result) uint64 { return r.peakRSS }))),
				fmtBytes(c.med(func(r *result) float64 { return float64(r.steadyRSS) })),
				fmtCount(lost, exp),
				fmtCount(c.sum(func(r *result) uint64 { return r.dups }), exp),
				fmtCount(c.sum(func(r *result) uint64 { return r.reordered }), exp),
				fmtCount(c.sum(func(r *result) uint64 { return r.corrupt + r.misrouted }), exp),
				c.med(func(r *result) float64 { return r.genCPUPct }),
				c.med(func(r *result) float64 { return r.otherPct }))
		}
	}

	for i := range rp.ws {
		w := &rp.ws[i]
		if w.filters == 0 {
			continue
		}
		var parts []string
		for _, b := range rp.bs {
			if c := rp.cell(w.name, b.name); c != nil && c.na() == "" {
				parts = append(parts, fmt.Sprintf("%s %.2f s", b.name, c.med(func(r *result) float64 { return r.subscribeSec })))
			}
		}
		if len(parts) > 0 {
			p("\nTime for the %d subscriptions of %s to be acknowledged: %s.\n", w.filters, w.name, strings.Join(parts, ", "))
		}
	}

	p("\n### Idle connections\n\n")
	p("| workload | broker | RSS before | RSS after | memory per connection | time to connect all |\n")
	p("|---|---|---:|---:|---:|---:|\n")
	for i := range rp.ws {
		w := &rp.ws[i]
		if w.kind != idle {
			continue
		}
		for _, b := range rp.bs {
			c := rp.cell(w.name, b.name)
			if c == nil {
				continue
			}
			if na := c.na(); na != "" {
				p("| %s | %s | %s | | | |\n", w.name, b.name, na)
				continue
			}
			p("| %s | %s | %s | %s | %s | %.2f s |\n", w.name, b.name,
				fmtBytes(c.med(func(r *result) float64 { return float64(r.idleBefore) })),
				fmtBytes(c.med(func(r *result) float64 { return float64(r.idleAfter) })),
				fmtBytes(c.med(func(r *result) float64 { return r.perConn })),
				c.med(func(r *result) float64 { return r.seconds }))
		}
	}

	p("\n### gatewayd relative to its peers\n\n")
	p("Median over rounds of the per-round ratio gatewayd ÷ peer (for msg/s higher is better; for the others lower is better).\n\n")
	p("| workload | msg/s ÷ mosquitto | msg/s ÷ mochi | p99 ÷ mosquitto | p99 ÷ mochi | CPU/msg ÷ mosquitto | CPU/msg ÷ mochi | peak RSS ÷ mosquitto | peak RSS ÷ mochi | memory/conn ÷ mosquitto | memory/conn ÷ mochi |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i := range rp.ws {
		w := &rp.ws[i]
		gw := rp.cell(w.name, "gatewayd")
		mq, mo := rp.cell(w.name, "mosquitto"), rp.cell(w.name, "mochi")
		if gw == nil {
			continue
		}
		if na := gw.na(); na != "" {
			p("| %s | gatewayd %s | | | | | | | | | |\n", w.name, na)
			continue
		}
		f := []func(*result) float64{
			func(r *result) float64 { return r.msgPerSec },
			func(r *result) float64 { return float64(r.p99) },
			func(r *result) float64 { return r.cpuPerM },
			func(r *result) float64 { return float64(r.peakRSS) },
			func(r *result) float64 { return r.perConn },
		}
		var cols []string
		for k, fn := range f {
			if (w.kind == idle) != (k == 4) {
				cols = append(cols, "", "")
				continue
			}
			cols = append(cols, fmtRatio(ratio(gw, mq, fn)), fmtRatio(ratio(gw, mo, fn)))
		}
		p("| %s | %s |\n", w.name, strings.Join(cols, " | "))
	}
	sb.WriteString(rp.ceiling())
	return sb.String()
}

// ceiling compares gatewayd with the zero-logic forwarders in the message
// flows both ran: how much of the machine's ceiling it reaches.
func (rp *report) ceiling() string {
	var fws []string
	for _, fw := range forwarders {
		if hasBroker(rp.bs, fw) {
			fws = append(fws, fw)
		}
	}
	if len(fws) == 0 || !hasBroker(rp.bs, "gatewayd") {
		return ""
	}
	metrics := []struct {
		name string
		f    func(*result) float64
	}{
		{"msg/s", func(r *result) float64 { return r.msgPerSec }},
		{"p99", func(r *result) float64 { return float64(r.p99) }},
		{"CPU/msg", func(r *result) float64 { return r.cpuPerM }},
	}
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	p("\n### gatewayd against the ceiling\n\n")
	p("Median over rounds of the per-round ratio gatewayd ÷ forwarder: for msg/s the fraction of the ceiling gatewayd reaches, for p99 and CPU/msg how many times the floor it costs.\n\n")
	head, align := "| workload |", "|---|"
	for _, m := range metrics {
		for _, fw := range fws {
			head += fmt.Sprintf(" %s ÷ %s |", m.name, fw)
			align += "---:|"
		}
	}
	p("%s\n%s\n", head, align)
	rows := 0
	for i := range rp.ws {
		w := &rp.ws[i]
		gw := rp.cell(w.name, "gatewayd")
		if w.kind != flow || gw == nil || gw.na() != "" || w.forwarderNA != "" {
			continue
		}
		var cols []string
		for _, m := range metrics {
			for _, fw := range fws {
				cols = append(cols, fmtRatio(ratio(gw, rp.cell(w.name, fw), m.f)))
			}
		}
		p("| %s | %s |\n", w.name, strings.Join(cols, " | "))
		rows++
	}
	if rows == 0 {
		return ""
	}
	return sb.String()
}

type target struct {
	text, status, detail string
}

func (rp *report) targets() []target {
	// missed is set when gatewayd ran a workload and failed it outright.
	var missed bool
	gwAvail := func(names ...string) (string, bool) {
		missed = false
		for _, n := range names {
			c := rp.cell(n, "gatewayd")
			if c == nil {
				return "workload " + n + " not run", false
			}
			if c.failed() {
				missed = true
				return "gatewayd " + n + " " + c.na(), false
			}
			if na := c.na(); na != "" {
				return "gatewayd " + na, false
			}
		}
		return "", true
	}
	notMeasured := func() string {
		if missed {
			return "missed"
		}
		return "not measured"
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}
	var ts []target

	// 1. CPU per delivered message in the paced workloads.
	{
		t := target{text: "CPU per delivered message ≤ 0.5 × Mosquitto's in the paced workloads"}
		if why, ok := gwAvail("paced-qos0", "paced-qos1"); !ok {
			t.status, t.detail = notMeasured(), why
		} else {
			all, parts := true, []string{}
			cpu := func(r *result) float64 { return r.cpuPerM }
			for _, n := range []string{"paced-qos0", "paced-qos1"} {
				mq := rp.cell(n, "mosquitto")
				r, lo, hi := ratioRange(rp.cell(n, "gatewayd"), mq, cpu)
				all = all && r <= 0.5
				s := n + " " + fmtRatio(r)
				if lo != hi {
					s += " (rounds " + fmtRatio(lo) + "–" + fmtRatio(hi) + ")"
				}
				// What a broker that does nothing but copy bytes costs
				// against Mosquitto on this machine, in the same rounds.
				var floors []string
				for _, fw := range forwarders {
					if f := ratio(rp.cell(n, fw), mq, cpu); !math.IsNaN(f) {
						floors = append(floors, fw+" "+fmtRatio(f))
					}
				}
				if len(floors) > 0 {
					s += " (zero-logic floor: " + strings.Join(floors, ", ") + ")"
				}
				parts = append(parts, s)
			}
			t.status, t.detail = verdict(all), strings.Join(parts, ", ")
		}
		ts = append(ts, t)
	}
	// 2. p99 paced.
	{
		t := target{text: "p99 latency ≤ 0.5 ms in the paced workloads"}
		if why, ok := gwAvail("paced-qos0", "paced-qos1"); !ok {
			t.status, t.detail = notMeasured(), why
		} else {
			all, parts := true, []string{}
			for _, n := range []string{"paced-qos0", "paced-qos1"} {
				p99 := func(r *result) float64 { return float64(r.p99) }
				v := rp.cell(n, "gatewayd").med(p99)
				all = all && v <= float64(500*time.Microsecond)
				s := n + " " + fmtDur(v)
				var floors []string
				for _, fw := range forwarders {
					if f := rp.cell(n, fw); f != nil && f.na() == "" {
						floors = append(floors, fmt.Sprintf("%s %s", fw, fmtDur(f.med(p99))))
					}
				}
				if len(floors) > 0 {
					s += " (this machine's floor: " + strings.Join(floors, ", ") + ")"
				}
				parts = append(parts, s)
			}
			t.status, t.detail = verdict(all), strings.Join(parts, ", ")
		}
		ts = append(ts, t)
	}
	// 3. Saturated throughput.
	{
		t := target{text: "saturated throughput ≥ 1.5 × the best peer that loses nothing, losing nothing"}
		sat := []string{"sat-qos0-fanin", "sat-qos0-fanout", "sat-qos1-fanin", "many-topics"}
		if why, ok := gwAvail(sat...); !ok {
			t.status, t.detail = notMeasured(), why
		} else {
			all, parts := true, []string{}
			for _, n := range sat {
				gw := rp.cell(n, "gatewayd")
				v := gw.med(func(r *result) float64 { return r.msgPerSec })
				best, bestName := 0.0, ""
				for _, peer := range []string{"mosquitto", "mochi"} {
					c := rp.cell(n, peer)
					if c != nil && c.na() == "" && c.clean() {
						if pv := c.med(func(r *result) float64 { return r.msgPerSec }); pv > best {
							best, bestName = pv, peer
						}
					}
				}
				ok := gw.clean() && v >= 1.5*best
				all = all && ok
				s := fmt.Sprintf("%s %s msg/s", n, fmtRate(v))
				if bestName != "" {
					s += fmt.Sprintf(" vs %s %s (%s)", bestName, fmtRate(best), fmtRatio(v/best))
				} else {
					s += " (no peer lost nothing)"
				}
				if !gw.clean() {
					s += ", gatewayd lost/duplicated/reordered messages"
				}
				parts = append(parts, s+" → "+verdict(ok))
			}
			t.status, t.detail = verdict(all), strings.Join(parts, "; ")
		}
		ts = append(ts, t)
	}
	// 4. Durable QoS 1.
	{
		t := target{text: "durable QoS 1 throughput ≥ Mosquitto's non-durable QoS 1"}
		mq := rp.cell("sat-qos1-fanin", "mosquitto")
		if why, ok := gwAvail("durable-qos1"); !ok {
			t.status, t.detail = notMeasured(), why
		} else if mq == nil || mq.na() != "" {
			t.status, t.detail = "not measured", "mosquitto sat-qos1-fanin not run"
		} else {
			gw := rp.cell("durable-qos1", "gatewayd")
			v := gw.med(func(r *result) float64 { return r.msgPerSec })
			m := mq.med(func(r *result) float64 { return r.msgPerSec })
			t.status = verdict(v >= m && gw.clean())
			t.detail = fmt.Sprintf("gatewayd durable %s msg/s vs mosquitto sat-qos1-fanin %s msg/s", fmtRate(v), fmtRate(m))
			if !gw.clean() {
				t.detail += "; gatewayd lost/duplicated/reordered messages"
			}
			if gw.med(func(r *result) float64 { return float64(r.dataBytes) }) == 0 {
				t.status += " (in memory)"
				t.detail += "; gatewayd wrote nothing under data_dir, so its session was held in memory: not yet a durable measurement"
			}
		}
		ts = append(ts, t)
	}
	// 5. Memory per idle connection.
	idles := []string{}
	for _, w := range rp.ws {
		if w.kind == idle {
			idles = append(idles, w.name)
		}
	}
	{
		t := target{text: "memory per idle connection ≤ 4 KiB"}
		if why, ok := gwAvail(idles...); !ok || len(idles) == 0 {
			t.status, t.detail = notMeasured(), why
		} else {
			all, parts := true, []string{}
			for _, n := range idles {
				v := rp.cell(n, "gatewayd").med(func(r *result) float64 { return r.perConn })
				all = all && v <= 4096
				parts = append(parts, n+" "+fmtBytes(v))
			}
			t.status, t.detail = verdict(all), strings.Join(parts, ", ")
		}
		ts = append(ts, t)
	}
	// 6. Idle RSS.
	{
		t := target{text: "idle RSS of gatewayd ≤ 12 MiB"}
		if why, ok := gwAvail(idles...); !ok || len(idles) == 0 {
			t.status, t.detail = notMeasured(), why
		} else {
			var v []float64
			for _, n := range idles {
				for _, r := range rp.cell(n, "gatewayd").ok() {
					v = append(v, float64(r.idleBefore))
				}
			}
			m := median(v)
			t.status, t.detail = verdict(m <= 12<<20), "RSS after start, before any client: "+fmtBytes(m)
		}
		ts = append(ts, t)
	}
	// 7. Peak RSS under saturated fan-in.
	{
		t := target{text: "peak RSS under saturated fan-in ≤ 64 MiB"}
		names := []string{"sat-qos0-fanin", "sat-qos1-fanin"}
		if why, ok := gwAvail(names...); !ok {
			t.status, t.detail = notMeasured(), why
		} else {
			all, parts := true, []string{}
			for _, n := range names {
				v := rp.cell(n, "gatewayd").maxU(func(r *result) uint64 { return r.peakRSS })
				all = all && v <= 64<<20
				parts = append(parts, n+" "+fmtBytes(float64(v)))
			}
			t.status, t.detail = verdict(all), strings.Join(parts, ", ")
		}
		ts = append(ts, t)
	}
	// 8. Binary size.
	{
		t := target{text: "stripped linux/arm GOARM=6 binary ≤ 12 MiB"}
		if rp.armErr != "" {
			t.status, t.detail = "not measured", rp.armErr
		} else {
			t.status = verdict(rp.armSize <= 12<<20)
			t.detail = fmt.Sprintf("%s (%d bytes)", fmtBytes(float64(rp.armSize)), rp.armSize)
		}
		ts = append(ts, t)
	}
	return ts
}

func (rp *report) targetTable() string {
	var sb strings.Builder
	sb.WriteString("### gatewayd targets\n\n| target | status | measured |\n|---|---|---|\n")
	for _, t := range rp.targets() {
		fmt.Fprintf(&sb, "| %s | **%s** | %s |\n", t.text, t.status, t.detail)
	}
	return sb.String()
}

// durability says what held the persistent session in durable-qos1.
func (rp *report) durability() string {
	var sb strings.Builder
	for _, b := range rp.bs {
		c := rp.cell("durable-qos1", b.name)
		if c == nil {
			continue
		}
		var what string
		switch b.name {
		case "gatewayd":
			if c.na() != "" {
				what = c.na()
				break
			}
			var v []float64
			for _, r := range c.ok() {
				v = append(v, float64(r.dataBytes))
			}
			if n := median(v); n > 0 {
				what = fmt.Sprintf("session store under data_dir (%s on disk at the end of a run)", fmtBytes(n))
			} else {
				what = "nothing was written under data_dir: the session was held in memory"
			}
		case "mosquitto":
			what = "`persistence false`: the session is held in memory"
		case "mochi":
			what = "no storage hook: the session is held in memory"
		case "forwarder", "forwarder-epoll":
			what = "no sessions: it only forwards"
		}
		fmt.Fprintf(&sb, "- %s: %s\n", b.name, what)
	}
	if sb.Len() == 0 {
		return ""
	}
	return "### What held the persistent session in durable-qos1\n\n" + sb.String() + "\n"
}

func (rp *report) errors() string {
	var sb strings.Builder
	for i := range rp.ws {
		for _, b := range rp.bs {
			c := rp.cell(rp.ws[i].name, b.name)
			if c == nil {
				continue
			}
			for _, r := range c.rounds {
				for _, e := range r.errs {
					fmt.Fprintf(&sb, "- round %d, %s, %s: %s\n", r.round, r.workload, r.broker, e)
				}
			}
		}
	}
	if sb.Len() == 0 {
		return ""
	}
	return "### Errors during the run\n\n" + sb.String()
}

func cpuModel() (string, int) {
	b, _ := os.ReadFile("/proc/cpuinfo")
	model, n := "unknown", 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			model = strings.TrimSpace(v)
		}
	}
	return model, n
}

func (rp *report) markdown(goVersion, kernel string) string {
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	model, cores := cpuModel()
	p("Run on %s UTC (%.0f s), %s.\n\n", rp.started.UTC().Format("2006-01-02 15:04"), rp.ended.Sub(rp.started).Seconds(), map[bool]string{true: "**smoke run: tiny sizes, figures not meaningful**", false: fmt.Sprintf("%d rounds of %s per workload", rp.rounds, rp.dur)}[rp.smoke])
	p("- Machine: %d cores, %s; %s; load average %s at start, %s at end\n", cores, model, kernel, rp.loadStart, rp.loadEnd)
	p("- %s\n", goVersion)
	for _, b := range rp.bs {
		v := b.version
		if b.unavailable != "" {
			v = "not available: " + b.unavailable
		}
		p("- %s: %s\n", b.name, v)
	}
	p("- Command: `%s`\n\n", rp.command)
	sb.WriteString(rp.tables())
	sb.WriteString("\n")
	sb.WriteString(rp.durability())
	sb.WriteString(rp.targetTable())
	if e := rp.errors(); e != "" {
		sb.WriteString("\n" + e)
	}
	return sb.String()
}

const (
	beginMarker = "<!-- bench:begin (generated by scripts/bench; a re-run replaces everything up to bench:end) -->"
	endMarker   = "<!-- bench:end -->"
)

// writeDoc replaces the text between the markers in path, creating the file
// from docTemplate when it does not exist or lacks the markers.
func writeDoc(path, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	i, j := strings.Index(text, beginMarker), strings.Index(text, endMarker)
	if i < 0 || j < i {
		text = docTemplate + "\n" + beginMarker + "\n" + endMarker + "\n"
		i, j = strings.Index(text, beginMarker), strings.Index(text, endMarker)
	}
	text = text[:i+len(beginMarker)] + "\n" + body + "\n" + text[j:]
	return os.WriteFile(path, []byte(text), 0o644)
}
