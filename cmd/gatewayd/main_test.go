package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gatewayd/broker/auth"
	"gatewayd/config"
	"gatewayd/internal/testenv"
	"gatewayd/internal/testproc"
)

// These tests build the real gatewayd binary once and run it as a
// subprocess, the way systemd and users run it.

// Stamped into the test binary, as the Makefile stamps releases.
const (
	testVersion = "v9.9.9-test"
	testCommit  = "0123456789ab"
	testDate    = "2026-01-02T03:04:05Z"
)

// hangGuard only keeps a broken build from hanging the test run; no test
// asserts how fast anything happens.
// Under qemu-user (make test-arm) it is stretched by testenv.Scale.
var hangGuard = testenv.Scale(60 * time.Second)

var gatewayd string // path of the built binary

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gatewayd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gatewayd = filepath.Join(dir, "gatewayd")
	args := []string{"build", "-o", gatewayd,
		"-ldflags", fmt.Sprintf("-X main.version=%s -X main.commit=%s -X main.date=%s", testVersion, testCommit, testDate)}
	if raceEnabled {
		args = append(args, "-race")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	build := exec.Command(goTool, append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building gatewayd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running gatewayd.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string // stdout, line by line
	stdout testproc.Buffer
	stderr testproc.Buffer
	done   chan struct{}
	err    error // from Wait, once done is closed
}

// start runs gatewayd with args in dir (a temporary directory if "").
// stderrFile, if not nil, is given to the process as its stderr.
func start(t *testing.T, dir string, env []string, stderrFile *os.File, args ...string) *proc {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p := &proc{t: t, lines: make(chan string, 100), done: make(chan struct{})}
	if q := testenv.Emulator(); q != "" {
		// Tests built for another architecture (make test-arm) run under
		// qemu-user, and so must the gatewayd they build.
		p.cmd = exec.Command(q, append([]string{gatewayd}, args...)...)
	} else {
		p.cmd = exec.Command(gatewayd, args...)
	}
	p.cmd.Dir = dir
	p.cmd.Env = append(cleanEnv(), env...)
	if stderrFile != nil {
		p.cmd.Stderr = stderrFile
	} else {
		p.cmd.Stderr = &p.stderr
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.stdout.Write(append(sc.Bytes(), '\n'))
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		readers.Wait() // Wait must not close the pipe before it is drained
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// cleanEnv is the test's environment without what changes gatewayd's output.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "JOURNAL_STREAM=") {
			env = append(env, kv)
		}
	}
	return env
}

// exitCode waits for the process to end and returns its exit code.
func (p *proc) exitCode() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(hangGuard):
		p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("gatewayd did not exit; stdout:\n%s\nstderr:\n%s", p.stdout.String(), p.stderr.String())
	}
	if p.cmd.ProcessState == nil {
		p.t.Fatalf("gatewayd: %v", p.err)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitListening waits for the start-up line and returns it.
func (p *proc) waitListening() string {
	p.t.Helper()
	timeout := time.After(hangGuard)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				p.exitCode()
				p.t.Fatalf("gatewayd exited with %d before listening; stderr:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
			}
			if strings.Contains(line, "MQTT broker listening on") {
				return line
			}
		case <-timeout:
			p.t.Fatalf("gatewayd printed no listening line; stdout:\n%s\nstderr:\n%s", p.stdout.String(), p.stderr.String())
		}
	}
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		// The kernel may hand a just-closed port out again: two calls in
		// one test (broker and metrics addresses) must not get the same.
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr
		}
	}
}

// handedOut holds every address freeAddr returned.
var handedOut sync.Map

// writeConfig writes a configuration file into dir and returns its path.
func writeConfig(t *testing.T, dir, content string) string {
	t.Helper()
	path := filepath.Join(dir, "gatewayd.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// brokerConfig is a configuration listening on addr with its state in dir.
func brokerConfig(dir, addr string) string {
	return fmt.Sprintf(`gateway_id: gw-test
data_dir: %s
broker:
  sys_interval: 1s
  listeners:
    - name: test
      address: %s
`, filepath.Join(dir, "state"), addr)
}

// mqttConnect sends a raw CONNECT at protocol level 4 (3.1.1) or 5 and returns
// the CONNACK's bytes.
func mqttConnect(t *testing.T, addr string, level byte) (net.Conn, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(hangGuard))
	var pkt []byte
	switch level {
	case 4:
		pkt = []byte{0x10, 16, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, 4, 't', 'e', 's', 't'}
	case 5:
		pkt = []byte{0x10, 15, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 60, 0, 0, 2, 'v', '5'}
	}
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	head := make([]byte, 2)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	if head[1]&0x80 != 0 {
		t.Fatalf("CONNACK remaining length %#x too long", head[1])
	}
	body := make([]byte, head[1])
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	return c, append(head, body...)
}

func TestVersionPrintsVersionCommitDateAndGo(t *testing.T) {
	p := start(t, "", nil, nil, "--version")
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	want := fmt.Sprintf("gatewayd %s (commit %s, built %s, %s %s/%s)\n",
		testVersion, testCommit, testDate, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if got := p.stdout.String(); got != want {
		t.Errorf("--version printed %q, want %q", got, want)
	}
}

func TestBadConfigurationExitsTwoNamingFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, content string
		want          []string // lines expected on stderr, after "gatewayd: FILE"
	}{
		{"unknown key", `gateway_id: gw-1
broker:
  listeners:
    - name: lan
      adress: 0.0.0.0:1883
`, []string{":5: broker.listeners[0].adress: unknown key"}},
		{"bad duration", "broker:\n  sys_interval: 10 seconds\n",
			[]string{`:2: broker.sys_interval: "10 seconds" is not a duration`}},
		{"wrong type", "broker:\n  max_inflight: many\n",
			[]string{`:2: broker.max_inflight: want an integer from 0 to 65535, got "many"`}},
		{"bad address", "broker:\n  listeners:\n    - name: lan\n      address: localhost\n",
			[]string{`:4: broker.listeners[0].address: "localhost" is not host:port`}},
		{"bad log level", "log:\n  level: loud\n",
			[]string{`:2: log.level: "loud" is not one of debug, info, warn, error`}},
		{"gateway id with a slash", "gateway_id: site/1\n",
			[]string{`:1: gateway_id: "site/1" must not contain '/', '+', '#' or NUL`}},
		{"several problems", "colour: red\nbroker:\n  max_packet_size: 1\n  receive_maximum: 0\n",
			[]string{":1: colour: unknown key"}},
		{"several validation problems", "broker:\n  max_packet_size: 1\n  receive_maximum: 0\n",
			[]string{":2: broker.max_packet_size: 1 is outside", ":3: broker.receive_maximum: must be at least 1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeConfig(t, dir, c.content)
			p := start(t, dir, nil, nil, "--config", path)
			if code := p.exitCode(); code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, p.stderr.String())
			}
			stderr := p.stderr.String()
			for _, w := range c.want {
				if !strings.Contains(stderr, "gatewayd: "+path+w) {
					t.Errorf("stderr does not contain %q:\n%s", "gatewayd: "+path+w, stderr)
				}
			}
			if p.stdout.String() != "" {
				t.Errorf("stdout: %q", p.stdout.String())
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
				t.Error("data_dir created despite the bad configuration")
			}
		})
	}
}

func TestBadCommandLineExitsTwo(t *testing.T) {
	for name, args := range map[string][]string{
		"unknown flag":       {"--colour"},
		"bad log level":      {"--log-level", "loud"},
		"bad log format":     {"--log-format", "xml"},
		"stray argument":     {"gatewayd.yaml"},
		"missing config":     {"--config", "/nonexistent/gatewayd.yaml"},
		"config is a folder": {"--config", os.TempDir()},
	} {
		t.Run(name, func(t *testing.T) {
			p := start(t, "", nil, nil, args...)
			if code := p.exitCode(); code != 2 {
				t.Errorf("exit %d, want 2; stderr:\n%s", code, p.stderr.String())
			}
			if !strings.Contains(p.stderr.String(), args[len(args)-1]) && name != "unknown flag" {
				t.Errorf("stderr does not name %q:\n%s", args[len(args)-1], p.stderr.String())
			}
		})
	}
}

func TestStartsAndAnswersMQTTConnect(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	path := writeConfig(t, dir, brokerConfig(dir, addr))
	p := start(t, dir, nil, nil, "--config", path)

	line := p.waitListening()
	want := fmt.Sprintf("gatewayd %s: MQTT broker listening on %s (listener test)", testVersion, addr)
	if line != want {
		t.Errorf("start-up line %q, want %q", line, want)
	}

	_, ack := mqttConnect(t, addr, 4)
	if !bytes.Equal(ack, []byte{0x20, 0x02, 0x00, 0x00}) {
		t.Errorf("3.1.1 CONNACK % x, want 20 02 00 00", ack)
	}
	_, ack = mqttConnect(t, addr, 5)
	if len(ack) < 4 || ack[0] != 0x20 || ack[3] != 0x00 {
		t.Errorf("5.0 CONNACK % x, want type 2 with reason Success", ack)
	}

	fi, err := os.Stat(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatalf("data_dir not created: %v", err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("data_dir mode %v, want a directory with 0700", fi.Mode())
	}

	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr.String())
	}
}

func TestSignalShutsDownWithExitZeroDespiteConnectedClients(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			addr := freeAddr(t)
			p := start(t, dir, nil, nil, "--config", writeConfig(t, dir, brokerConfig(dir, addr)))
			p.waitListening()
			conn, _ := mqttConnect(t, addr, 4) // stays connected through shutdown
			p.signal(sig)
			if code := p.exitCode(); code != 0 {
				t.Fatalf("exit %d, want 0; stderr:\n%s", code, p.stderr.String())
			}
			// The broker let the client go: its connection is closed.
			conn.SetReadDeadline(time.Now().Add(hangGuard))
			if _, err := io.Copy(io.Discard, conn); err != nil {
				t.Errorf("client connection not closed cleanly: %v", err)
			}
			if !strings.Contains(p.stderr.String(), "shutting down") {
				t.Errorf("no shutdown logged:\n%s", p.stderr.String())
			}
		})
	}
}

func TestPortTakenNamesTheKeyToChange(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()

	dir := t.TempDir()
	path := writeConfig(t, dir, brokerConfig(dir, addr))
	p := start(t, dir, nil, nil, "--config", path)
	if code := p.exitCode(); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, p.stderr.String())
	}
	stderr := p.stderr.String()
	for _, want := range []string{
		addr,
		"broker.listeners[0].address",
		fmt.Sprintf("%s:7: change broker.listeners[0].address (%s) to a free address", path, addr),
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(p.stdout.String(), "listening") {
		t.Errorf("stdout claims to listen: %q", p.stdout.String())
	}
}

// Without --config gatewayd uses its built-in configuration: 127.0.0.1:1883
// and ./data. The port may be in use on a developer's machine; then the
// message must say how to get past it.
func TestBuiltInConfigurationListensOnLocalhost1883(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir, nil, nil)
	busy := func() {
		<-p.done
		stderr := p.stderr.String()
		if code := p.exitCode(); code != 1 || !strings.Contains(stderr, "the built-in configuration listens on 127.0.0.1:1883") ||
			!strings.Contains(stderr, "--config FILE with another broker.listeners[0].address") {
			t.Errorf("exit %d; stderr:\n%s", code, stderr)
		}
	}
	select {
	case line, ok := <-p.lines:
		if !ok {
			// Standard output closed without a start-up line: 1883 is taken.
			busy()
			return
		}
		want := fmt.Sprintf("gatewayd %s: MQTT broker listening on 127.0.0.1:1883 (listener local)", testVersion)
		if line != want {
			t.Errorf("start-up line %q, want %q", line, want)
		}
		fi, err := os.Stat(filepath.Join(dir, "data"))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("./data: %v, %v; want a 0700 directory", fi, err)
		}
		p.signal(syscall.SIGTERM)
		if code := p.exitCode(); code != 0 {
			t.Errorf("exit %d after SIGTERM; stderr:\n%s", code, p.stderr.String())
		}
	case <-p.done:
		busy()
	case <-time.After(hangGuard):
		t.Fatalf("gatewayd neither listened nor exited; stderr:\n%s", p.stderr.String())
	}
}

func TestEmbeddedDefaultConfiguration(t *testing.T) {
	f, err := config.Parse(defaultName, defaultYAML)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if err := f.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if cfg.GatewayID != host || cfg.DataDir != "./data" || cfg.Log != (LogConfig{Level: "info", Format: "text"}) {
		t.Errorf("defaults: %+v", cfg)
	}
	if len(cfg.Broker.Listeners) != 1 || cfg.Broker.Listeners[0].Address != "127.0.0.1:1883" {
		t.Errorf("listeners: %+v", cfg.Broker.Listeners)
	}
}

func TestLogIsTextWithTimestampsByDefault(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, dir, nil, nil, "--config", writeConfig(t, dir, brokerConfig(dir, addr)))
	p.waitListening()
	p.signal(syscall.SIGTERM)
	p.exitCode()
	lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
	for _, l := range lines {
		if !strings.HasPrefix(l, "time=") {
			t.Errorf("log line without a timestamp: %q", l)
		}
	}
	if !strings.Contains(p.stderr.String(), `level=INFO msg="gatewayd started"`) {
		t.Errorf("no start record:\n%s", p.stderr.String())
	}
}

func TestLogFormatJSONFlag(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, dir, nil, nil, "--config", writeConfig(t, dir, brokerConfig(dir, addr)), "--log-format", "json", "--log-level", "debug")
	p.waitListening()
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	started := false
	for _, l := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Errorf("not JSON: %q", l)
			continue
		}
		if rec["msg"] == "gatewayd started" && rec["gateway_id"] == "gw-test" {
			started = true
		}
	}
	if !started {
		t.Errorf("no start record:\n%s", p.stderr.String())
	}
}

func TestJournalStreamGivesPriorityPrefixesAndNoTimestamps(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	journal := fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino)

	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, dir, []string{journal}, w, "--config", writeConfig(t, dir, brokerConfig(dir, addr)), "--log-level", "debug")
	w.Close()
	var stderr bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&stderr, r); close(copied) }()

	p.waitListening()
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit %d", code)
	}
	<-copied
	out := stderr.String()
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		prio, rest, ok := strings.Cut(l, ">")
		if !ok || !strings.Contains("<3 <4 <6 <7", prio) || len(prio) != 2 {
			t.Errorf("line without a priority prefix: %q", l)
		}
		if strings.Contains(rest, "time=") {
			t.Errorf("line with a timestamp: %q", l)
		}
		if strings.Contains(rest, "level=INFO") && prio != "<6" || strings.Contains(rest, "level=DEBUG") && prio != "<7" {
			t.Errorf("priority does not match the level: %q", l)
		}
	}
	if !strings.Contains(out, `<6>level=INFO msg="gatewayd started"`) {
		t.Errorf("no start record with <6>:\n%s", out)
	}
}

func TestJournalStreamOfAnotherStreamIsIgnored(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, dir, []string{"JOURNAL_STREAM=8:12345"}, nil, "--config", writeConfig(t, dir, brokerConfig(dir, addr)))
	p.waitListening()
	p.signal(syscall.SIGTERM)
	p.exitCode()
	if out := p.stderr.String(); strings.HasPrefix(out, "<") || !strings.HasPrefix(out, "time=") {
		t.Errorf("stderr is not the journal, yet:\n%s", out)
	}
}

// The quick tour in README.md: subscribe to $SYS with mosquitto_sub.
func TestMosquittoSubSeesSysTopics(t *testing.T) {
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed (make test installs mosquitto-clients)")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, dir, nil, nil, "--config", writeConfig(t, dir, brokerConfig(dir, addr)))
	p.waitListening()
	host, port, _ := net.SplitHostPort(addr)
	out, err := exec.Command(sub, "-h", host, "-p", port, "-t", "$SYS/#", "-v", "-C", "1", "-W", "60").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_sub: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "$SYS/broker/") {
		t.Errorf("mosquitto_sub printed %q, want a $SYS/broker/ topic", out)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// readPacket reads one MQTT packet: its first byte and its body.
func readPacket(t *testing.T, r *bufio.Reader) (byte, []byte) {
	t.Helper()
	first, err := r.ReadByte()
	if err != nil {
		t.Fatalf("reading a packet: %v", err)
	}
	n, mul := 0, 1
	for {
		b, err := r.ReadByte()
		if err != nil {
			t.Fatalf("reading a packet: %v", err)
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		mul *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("reading a packet: %v", err)
	}
	return first, body
}

// A QoS 1 retained message acknowledged before a restart is there after it:
// the broker's store lives in data_dir.
func TestRetainedMessageSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	path := writeConfig(t, dir, brokerConfig(dir, addr))

	p := start(t, dir, nil, nil, "--config", path)
	p.waitListening()
	c, _ := mqttConnect(t, addr, 4)
	// PUBLISH QoS 1, retain, topic "t/r", packet id 1, payload "kept".
	if _, err := c.Write([]byte{0x33, 11, 0, 3, 't', '/', 'r', 0, 1, 'k', 'e', 'p', 't'}); err != nil {
		t.Fatal(err)
	}
	if typ, body := readPacket(t, bufio.NewReader(c)); typ != 0x40 || !bytes.Equal(body, []byte{0, 1}) {
		t.Fatalf("got %#x % x, want PUBACK for packet 1", typ, body)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "store")); err != nil {
		t.Errorf("no store under data_dir: %v", err)
	}

	p = start(t, dir, nil, nil, "--config", path)
	p.waitListening()
	c, _ = mqttConnect(t, addr, 4)
	// SUBSCRIBE packet id 2 to "t/r" at QoS 1.
	if _, err := c.Write([]byte{0x82, 8, 0, 2, 0, 3, 't', '/', 'r', 1}); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if typ, body := readPacket(t, r); typ != 0x90 || !bytes.Equal(body, []byte{0, 2, 1}) {
		t.Fatalf("got %#x % x, want SUBACK granting QoS 1", typ, body)
	}
	typ, body := readPacket(t, r)
	if typ&0xf1 != 0x31 || !bytes.HasPrefix(body, []byte{0, 3, 't', '/', 'r'}) || !bytes.HasSuffix(body, []byte("kept")) {
		t.Fatalf("got %#x % x, want the retained PUBLISH of t/r", typ, body)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

func TestSecondGatewaydOnTheSameDataDirIsRefused(t *testing.T) {
	dir := t.TempDir()
	first := start(t, dir, nil, nil, "--config", writeConfig(t, dir, brokerConfig(dir, freeAddr(t))))
	first.waitListening()

	other := t.TempDir()
	path := writeConfig(t, other, brokerConfig(dir, freeAddr(t))) // same data_dir
	second := start(t, other, nil, nil, "--config", path)
	if code := second.exitCode(); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, second.stderr.String())
	}
	if !strings.Contains(second.stderr.String(), "gatewayd: "+path+":2: data_dir: ") {
		t.Errorf("stderr does not point at data_dir:\n%s", second.stderr.String())
	}

	first.signal(syscall.SIGTERM)
	if code := first.exitCode(); code != 0 {
		t.Errorf("first gatewayd: exit %d", code)
	}
}

// waitStderr waits until the process's stderr contains s.
func (p *proc) waitStderr(s string) {
	p.t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			p.t.Fatalf("stderr never contained %q:\n%s", s, p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mqttLogin sends a 3.1.1 CONNECT with a user name and password and returns
// the CONNACK return code.
func mqttLogin(t *testing.T, addr, user, password string) byte {
	t.Helper()
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	body := append(str("MQTT"), 4, 0xC2, 0, 60) // level 4; user name, password, clean session
	body = append(body, str("login")...)
	body = append(body, str(user)...)
	body = append(body, str(password)...)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(hangGuard))
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	typ, ack := readPacket(t, bufio.NewReader(c))
	if typ != 0x20 || len(ack) != 2 {
		t.Fatalf("got %#x % x, want a CONNACK", typ, ack)
	}
	return ack[1]
}

func TestSIGHUPReloadsThePasswordFile(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if err := auth.SetPassword(passwd, "alice", []byte("first")); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfg := brokerConfig(dir, addr) + "  password_file: " + passwd + "\n"
	path := writeConfig(t, dir, cfg)
	p := start(t, dir, nil, nil, "--config", path)
	p.waitListening()

	if code := mqttLogin(t, addr, "alice", "second"); code != 4 {
		t.Fatalf("CONNACK %d with a wrong password, want 4", code)
	}
	if err := auth.SetPassword(passwd, "alice", []byte("second")); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="configuration reloaded"`)
	if code := mqttLogin(t, addr, "alice", "second"); code != 0 {
		t.Errorf("CONNACK %d with the new password after SIGHUP, want 0", code)
	}

	// A configuration with a mistake is not applied, and gatewayd runs on.
	writeConfig(t, dir, cfg+"  colour: red\n")
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="configuration not reloaded" problem="` + path + `:9: broker.colour: unknown key"`)
	if code := mqttLogin(t, addr, "alice", "second"); code != 0 {
		t.Errorf("CONNACK %d after a failed reload, want 0", code)
	}

	// A change that needs a restart says so.
	writeConfig(t, dir, strings.Replace(cfg, "sys_interval: 1s", "sys_interval: 2s", 1))
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="changes that take effect at the next restart" keys=broker`)

	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

func TestAddressNotOnThisHostNamesTheKeyToChange(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, brokerConfig(dir, "192.0.2.1:1883")) // TEST-NET-1: no host has it
	p := start(t, dir, nil, nil, "--config", path)
	if code := p.exitCode(); code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, p.stderr.String())
	}
	want := path + ":7: change broker.listeners[0].address (192.0.2.1:1883) to an address of this host that gatewayd may use"
	if !strings.Contains(p.stderr.String(), want) {
		t.Errorf("stderr does not contain %q:\n%s", want, p.stderr.String())
	}
}
