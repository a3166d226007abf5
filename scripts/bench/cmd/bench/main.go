// Command bench measures gatewayd's MQTT broker side by side with Debian's
// Mosquitto, mochi-mqtt and two zero-logic forwarders (the machine's
// ceiling: one goroutine-per-connection, one a single-thread epoll loop):
// each broker is started on a loopback port, given the same workloads in
// interleaved rounds, and every delivered message is verified.
//
// Run it from scripts/bench:
//
//	go run ./cmd/bench -out ../../docs/BENCHMARKS.md   # full run, ~12 minutes
//	go run ./cmd/bench -smoke                          # seconds per workload, for CI
//
// It only ever talks to 127.0.0.1, bounds every load loop by count and time,
// and kills every process it started when it ends, fails or is interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		rounds   = flag.Int("rounds", 3, "interleaved rounds; figures are medians over them")
		duration = flag.Duration("duration", 4*time.Second, "publishing time per flow workload run")
		wlist    = flag.String("workloads", "all", "comma-separated workloads, or all")
		blist    = flag.String("brokers", "gatewayd,mosquitto,mochi,forwarder,forwarder-epoll", "comma-separated brokers, in run order")
		smoke    = flag.Bool("smoke", false, "every workload at tiny sizes for a second or so, one round (for CI)")
		out      = flag.String("out", "", "markdown file whose generated section is replaced with the results (e.g. ../../docs/BENCHMARKS.md)")
		repo     = flag.String("repo", "", "gatewayd repository root (default: found from the working directory)")
		gwArgs   = flag.String("gatewayd-args", "-config {config}", "gatewayd's arguments; {config} is the generated config file")
		timeout  = flag.Duration("timeout", 40*time.Minute, "hard limit on the whole run")
		listWl   = flag.Bool("list", false, "list the workloads and exit")
		gwRev    = flag.String("gatewayd-rev", "", "measure gatewayd as committed at this revision (e.g. HEAD) instead of the working tree")
		niceness = flag.Int("nice", 0, "scheduling niceness for the harness and the brokers it starts (negative needs root): on a machine busy with other work, favours the measurement")
	)
	flag.Parse()
	all := workloads(*smoke)
	if *listWl {
		for _, w := range all {
			fmt.Printf("%-16s %s\n", w.name, w.title)
		}
		return 0
	}
	sz := sizes{duration: *duration, maxPerPub: 50_000_000, quiet: 2 * time.Second, settle: time.Second}
	if *smoke {
		*rounds = 1
		if !flagSet("duration") {
			*duration = time.Second
		}
		sz = sizes{duration: *duration, maxPerPub: 2000, quiet: time.Second, settle: 200 * time.Millisecond}
		if !flagSet("timeout") {
			*timeout = 10 * time.Minute
		}
	}

	var ws []workload
	if *wlist == "all" {
		ws = all
	} else {
		for _, n := range strings.Split(*wlist, ",") {
			found := false
			for _, w := range all {
				if w.name == strings.TrimSpace(n) || (strings.HasPrefix(n, "idle-") && w.kind == idle && strings.TrimSpace(n) == w.name) {
					ws, found = append(ws, w), true
				}
			}
			if !found {
				fmt.Fprintf(os.Stderr, "bench: unknown workload %q (-list shows them)\n", n)
				return 2
			}
		}
	}
	var names []string
	for _, n := range strings.Split(*blist, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, *timeout)
	defer cancelT()
	defer killAll()
	go func() {
		// A second interrupt, or the deadline, must not leave brokers behind.
		<-ctx.Done()
		time.Sleep(20 * time.Second)
		killAll()
		fmt.Fprintln(os.Stderr, "bench: did not stop within 20 s of being interrupted; brokers killed")
		os.Exit(130)
	}()

	raiseNoFile()
	if *niceness != 0 {
		if err := setNice(*niceness); err != nil {
			logf("-nice %d not applied (%v): running at the default priority", *niceness, err)
			*niceness = 0
		}
	}
	root, benchDir, err := findRepo(*repo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if wd, err := os.Getwd(); err == nil {
		if d, ok := findModule(wd, "gatewayd/scripts/bench"); ok {
			benchDir = d // the harness's own module, even with -repo elsewhere
		}
	}
	tmp, err := os.MkdirTemp("", "gatewayd-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	defer os.RemoveAll(tmp)
	binDir := filepath.Join(tmp, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}

	logf("building brokers")
	bs, gwSrc, err := setupBrokers(ctx, names, root, benchDir, binDir, *gwArgs, *gwRev)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	harnessFailed := false
	for _, b := range bs {
		if b.unavailable != "" {
			logf("%s not available: %s", b.name, b.unavailable)
			if b.name == "mochi" || isForwarder(b.name) {
				harnessFailed = true // these are built from this module
			}
		}
	}

	rp := &report{ws: ws, bs: bs, cells: map[string]*cell{}, started: time.Now(), loadStart: loadAvg(), rounds: *rounds, dur: *duration, smoke: *smoke,
		command: "cd scripts/bench && go run ./cmd/bench " + strings.Join(os.Args[1:], " ")}
	for i := range ws {
		for _, b := range bs {
			rp.cells[ws[i].name+"/"+b.name] = &cell{w: &ws[i], b: b}
		}
	}

	if hasBroker(bs, "gatewayd") {
		if size, err := armBinarySize(ctx, gwSrc, binDir); err != nil {
			rp.armErr = err.Error()
		} else {
			rp.armSize = size
		}
	}

	for round := 1; round <= *rounds && ctx.Err() == nil; round++ {
		for i := range ws {
			w := &ws[i]
			for _, b := range bs {
				if ctx.Err() != nil {
					break
				}
				r := &result{broker: b.name, workload: w.name, round: round}
				rp.cells[w.name+"/"+b.name].rounds = append(rp.cells[w.name+"/"+b.name].rounds, r)
				switch {
				case b.unavailable != "":
					r.na = "not available: " + oneLine(b.unavailable)
				case isForwarder(b.name) && w.forwarderNA != "":
					r.na = "n/a: " + w.forwarderNA
				default:
					runOne(ctx, b, w, sz, tmp, r)
				}
				logResult(r, *rounds)
			}
		}
	}
	rp.ended = time.Now()
	rp.loadEnd = loadAvg()
	interrupted := ctx.Err() != nil
	killAll()

	body := rp.markdown(goVersion(), kernel())
	fmt.Println(body)
	if *out != "" && !interrupted {
		if err := writeDoc(*out, body); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		logf("wrote %s", *out)
	}
	if interrupted {
		fmt.Fprintln(os.Stderr, "bench: interrupted or timed out:", context.Cause(ctx))
		return 1
	}
	if failures := check(rp); len(failures) > 0 {
		for _, f := range failures {
			fmt.Fprintln(os.Stderr, "bench: FAIL:", f)
		}
		return 1
	}
	if harnessFailed {
		return 1
	}
	return 0
}

// check lists what makes the run a failure: a broker that started but did
// not deliver, or delivered messages that failed verification. Loss,
// duplicates and reordering are the brokers' figures, not failures.
func check(rp *report) []string {
	var out []string
	for _, c := range rp.cells {
		for _, r := range c.rounds {
			id := fmt.Sprintf("round %d %s %s", r.round, r.workload, r.broker)
			if r.na != "" {
				for _, e := range r.errs {
					out = append(out, id+": "+e)
				}
				continue
			}
			for _, e := range r.errs {
				out = append(out, id+": "+e)
			}
			if r.unique == 0 && len(r.errs) == 0 {
				out = append(out, id+": nothing delivered")
			}
			if r.corrupt+r.misrouted > 0 {
				out = append(out, fmt.Sprintf("%s: %d corrupt or misrouted messages", id, r.corrupt+r.misrouted))
			}
		}
	}
	return out
}

func runOne(ctx context.Context, b *broker, w *workload, sz sizes, tmp string, r *result) {
	p, addr, err := b.start(ctx, tmp, w)
	if err != nil {
		if b.name == "gatewayd" {
			r.na = "not available: " + oneLine(err.Error())
		} else {
			r.na = "failed to start: " + oneLine(err.Error())
			r.fail("start: %v", err)
		}
		return
	}
	defer p.stop()
	runWorkload(ctx, w, p, addr, sz, r)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func logResult(r *result, rounds int) {
	head := fmt.Sprintf("[%d/%d] %-16s %-15s", r.round, rounds, r.workload, r.broker)
	switch {
	case r.na != "":
		logf("%s %s", head, r.na)
	case r.idleAfter > 0:
		logf("%s idle RSS %s → %s, %s/conn %s", head, fmtBytes(float64(r.idleBefore)), fmtBytes(float64(r.idleAfter)),
			fmtBytes(r.perConn), strings.Join(r.errs, "; "))
	default:
		logf("%s %s msg/s p50 %s p99 %s cpu %.2f s/M peak %s lost %d dup %d reord %d corrupt %d unacked %d gen %.0f%% others %.0f%% %s",
			head, fmtRate(r.msgPerSec), fmtDur(float64(r.p50)), fmtDur(float64(r.p99)), r.cpuPerM, fmtBytes(float64(r.peakRSS)),
			r.lost, r.dups, r.reordered, r.corrupt+r.misrouted, r.unacked, r.genCPUPct, r.otherPct, strings.Join(r.errs, "; "))
	}
}

func hasBroker(bs []*broker, name string) bool {
	for _, b := range bs {
		if b.name == name {
			return true
		}
	}
	return false
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// raiseNoFile lifts this process's open-file limit, which the brokers
// inherit: 10000 idle connections need 10000 descriptors on each side.
func raiseNoFile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	want := uint64(65536)
	if lim.Max < want {
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			return
		}
	}
	lim.Cur = min(max(lim.Cur, want), lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		logf("cannot raise RLIMIT_NOFILE: %v", err)
	}
}

// setNice sets the niceness of every thread of this process; threads and
// processes started later inherit it.
func setNice(n int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil {
			return fmt.Errorf("setpriority %d: %w", n, err)
		}
	}
	return nil
}

// findModule walks up from dir to the directory whose go.mod declares module.
func findModule(dir, module string) (string, bool) {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if strings.TrimSpace(line) == "module "+module {
					return d, true
				}
			}
		}
		if filepath.Dir(d) == d {
			return "", false
		}
	}
}

// findRepo walks up from dir (or the working directory) to the gatewayd
// module root and returns it and the bench module's directory.
func findRepo(dir string) (string, string, error) {
	if dir == "" {
		var err error
		if dir, err = os.Getwd(); err != nil {
			return "", "", err
		}
	}
	dir, _ = filepath.Abs(dir)
	root, ok := findModule(dir, "gatewayd")
	if !ok {
		return "", "", errors.New("no gatewayd module (go.mod with 'module gatewayd') above " + dir + "; pass -repo")
	}
	return root, filepath.Join(root, "scripts", "bench"), nil
}

func goVersion() string {
	v := output("", "go", "version")
	if v == "" {
		v = runtime.Version()
	}
	return v
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}
