package main

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWriteDocReplacesOnlyTheGeneratedSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	if err := writeDoc(path, "first run"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "# Benchmarks") || !strings.Contains(string(b), "first run") {
		t.Fatalf("new file:\n%s", b)
	}
	hand := strings.Replace(string(b), "# Benchmarks", "# Benchmarks\n\nHand-written text.", 1) + "\nAfter the results.\n"
	if err := os.WriteFile(path, []byte(hand), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeDoc(path, "second run"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	s := string(b)
	if strings.Contains(s, "first run") || !strings.Contains(s, "second run") ||
		!strings.Contains(s, "Hand-written text.") || !strings.Contains(s, "After the results.") ||
		strings.Count(s, beginMarker) != 1 || strings.Count(s, endMarker) != 1 {
		t.Fatalf("after re-run:\n%s", s)
	}
}

func TestRatioIsTheMedianOfPerRoundRatios(t *testing.T) {
	gw := &cell{rounds: []*result{{round: 1, msgPerSec: 10}, {round: 2, msgPerSec: 30}, {round: 3, msgPerSec: 100}}}
	mq := &cell{rounds: []*result{{round: 1, msgPerSec: 5}, {round: 2, msgPerSec: 10}, {round: 3, msgPerSec: 100}}}
	got := ratio(gw, mq, func(r *result) float64 { return r.msgPerSec })
	if got != 2 { // per round 2, 3, 1
		t.Fatalf("ratio %v, want 2", got)
	}
	if med, lo, hi := ratioRange(gw, mq, func(r *result) float64 { return r.msgPerSec }); med != 2 || lo != 1 || hi != 3 {
		t.Fatalf("ratioRange %v %v %v, want 2 1 3", med, lo, hi)
	}
	na := &cell{rounds: []*result{{round: 1, na: "not available: x"}}}
	if !math.IsNaN(ratio(gw, na, func(r *result) float64 { return r.msgPerSec })) {
		t.Fatal("ratio against an unavailable broker")
	}
}

func TestTargetsWithoutGatewaydAreNotMeasured(t *testing.T) {
	ws := workloads(true)
	bs := []*broker{{name: "gatewayd", unavailable: "cmd/gatewayd does not exist yet"}, {name: "mosquitto"}}
	rp := &report{ws: ws, bs: bs, cells: map[string]*cell{}, armErr: "cmd/gatewayd does not exist yet"}
	for i := range ws {
		for _, b := range bs {
			r := &result{round: 1, broker: b.name, workload: ws[i].name, unique: 10, expected: 10, msgPerSec: 100, p99: time.Millisecond}
			if b.unavailable != "" {
				r.na = "not available: " + b.unavailable
			}
			rp.cells[ws[i].name+"/"+b.name] = &cell{w: &ws[i], b: b, rounds: []*result{r}}
		}
	}
	for _, tg := range rp.targets() {
		if tg.status != "not measured" {
			t.Errorf("%s: %s (%s)", tg.text, tg.status, tg.detail)
		}
	}
	if fails := check(rp); len(fails) != 0 {
		t.Errorf("unavailable gatewayd failed the run: %v", fails)
	}
}

func TestCheckFailsOnCorruptionOrNothingDelivered(t *testing.T) {
	ws := workloads(true)[:1]
	b := &broker{name: "mosquitto"}
	rp := &report{ws: ws, bs: []*broker{b}, cells: map[string]*cell{
		ws[0].name + "/mosquitto": {w: &ws[0], b: b, rounds: []*result{
			{round: 1, unique: 0},
			{round: 2, unique: 5, corrupt: 1},
			{round: 3, unique: 5, lost: 3, dups: 1}, // a broker's figures, not a harness failure
		}},
	}}
	if fails := check(rp); len(fails) != 2 {
		t.Fatalf("failures %v", fails)
	}
}

func TestReportShowsBothForwardersAsTheCeiling(t *testing.T) {
	ws := workloads(true)
	names := []string{"gatewayd", "mosquitto", "forwarder", "forwarder-epoll"}
	var bs []*broker
	for _, n := range names {
		bs = append(bs, &broker{name: n})
	}
	// Figures per broker: msg/s, p99, CPU s/M.
	figs := map[string][3]float64{
		"gatewayd":        {1000, float64(600 * time.Microsecond), 30},
		"mosquitto":       {1000, float64(800 * time.Microsecond), 28},
		"forwarder":       {2000, float64(500 * time.Microsecond), 40},
		"forwarder-epoll": {4000, float64(400 * time.Microsecond), 15},
	}
	rp := &report{ws: ws, bs: bs, cells: map[string]*cell{}, rounds: 1}
	for i := range ws {
		for _, b := range bs {
			f := figs[b.name]
			r := &result{round: 1, broker: b.name, workload: ws[i].name, unique: 10, expected: 10,
				msgPerSec: f[0], p99: time.Duration(f[1]), cpuPerM: f[2]}
			if ws[i].forwarderNA != "" && isForwarder(b.name) {
				r.na = "n/a: " + ws[i].forwarderNA
			}
			rp.cells[ws[i].name+"/"+b.name] = &cell{w: &ws[i], b: b, rounds: []*result{r}}
		}
	}
	md := rp.markdown("go", "Linux")
	for _, want := range []string{
		"| paced-qos0 | forwarder-epoll | 4.0 k |",
		"| many-topics | forwarder-epoll | n/a: the forwarders do no topic matching |",
		"paced-qos0 600 µs (this machine's floor: forwarder 500 µs, forwarder-epoll 400 µs)",
		"paced-qos0 1.07× (zero-logic floor: forwarder 1.43×, forwarder-epoll 0.54×)",
		"| workload | msg/s ÷ forwarder | msg/s ÷ forwarder-epoll | p99 ÷ forwarder | p99 ÷ forwarder-epoll | CPU/msg ÷ forwarder | CPU/msg ÷ forwarder-epoll |",
		"| paced-qos0 | 0.50× | 0.25× | 1.20× | 1.50× | 0.75× | 2.00× |",
		"- forwarder-epoll: no sessions: it only forwards",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "| many-topics | 0.") {
		t.Errorf("ceiling row for a workload the forwarders cannot run:\n%s", md)
	}
}

// The forwarder-epoll broker is the forwarder binary with -epoll: it starts,
// answers the harness's handshake and, stopped, logs the epoll loop's
// counters.
func TestForwarderEpollBrokerRunsTheEpollLoop(t *testing.T) {
	root, benchDir, err := findRepo("")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	ctx := context.Background()
	bs, _, err := setupBrokers(ctx, []string{"forwarder", "forwarder-epoll"}, root, benchDir, tmp, "", "")
	if err != nil {
		t.Fatal(err)
	}
	w := &workloads(true)[0]
	for _, b := range bs {
		if b.unavailable != "" {
			t.Fatalf("%s: %s", b.name, b.unavailable)
		}
		argv, err := b.command(tmp, "127.0.0.1:1", w)
		if err != nil {
			t.Fatal(err)
		}
		if epoll := slices.Contains(argv, "-epoll"); epoll != (b.name == "forwarder-epoll") {
			t.Errorf("%s runs %v", b.name, argv)
		}
	}
	p, _, err := bs[1].start(ctx, tmp, w)
	if err != nil {
		t.Fatal(err)
	}
	p.stop()
	log, _ := os.ReadFile(filepath.Join(p.dir, "broker.log"))
	if !strings.Contains(string(log), "forwarder: ") || !strings.Contains(string(log), "accepted") {
		t.Fatalf("broker log: %q", log)
	}
}
