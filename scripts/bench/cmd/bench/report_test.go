package main

import (
	"math"
	"os"
	"path/filepath"
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
