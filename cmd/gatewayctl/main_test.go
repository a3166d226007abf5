package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"gatewayd/internal/testenv"
	"gatewayd/internal/testmosquitto"
)

// bin is the gatewayctl binary built for the tests.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gatewayctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "gatewayctl")
	// A plain build: a race-enabled binary takes over a second to start
	// here, and the client it runs is race-tested in its own package.
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building gatewayctl: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// Under make test-arm the binary is for the emulated architecture:
	// run it through the same qemu-user emulator as this test.
	if q := testenv.Emulator(); q != "" {
		w := bin + "-qemu"
		if err := os.WriteFile(w, []byte("#!/bin/sh\nexec "+q+" "+bin+" \"$@\"\n"), 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		bin = w
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// startBroker runs mosquitto with verbose logging, which the tests read to
// know when a subscriber's SUBSCRIBE has been handled.
func startBroker(t *testing.T) *testmosquitto.Broker {
	t.Helper()
	return testmosquitto.Start(t, testmosquitto.Options{Config: "allow_anonymous true\n", Verbose: true})
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(testenv.Scale(20 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proc is a gatewayctl run in the background.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.WaitDelay = testenv.Scale(5 * time.Second) // as in ctl
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait returns the exit status.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(testenv.Scale(30 * time.Second)):
		t.Fatalf("gatewayctl %v did not exit", p.cmd.Args[1:])
	}
	return p.cmd.ProcessState.ExitCode()
}

// ctl runs gatewayctl to completion.
func ctl(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(30*time.Second))
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	// Once gatewayctl has exited, its output pipes are not waited on for
	// ever: under qemu-user 7.2 the end of such a pipe was once never seen
	// (the run hung until the package's timeout). What was read is kept.
	cmd.WaitDelay = testenv.Scale(5 * time.Second)
	if err := cmd.Run(); errors.Is(err, exec.ErrWaitDelay) {
		t.Logf("gatewayctl %v: its output pipes were still open %v after it exited", args, cmd.WaitDelay)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// subscribed starts "gatewayctl sub" with args and waits until the broker
// has acknowledged its subscription.
func subscribed(t *testing.T, b *testmosquitto.Broker, id string, args ...string) *proc {
	t.Helper()
	p := start(t, append([]string{"sub", "-p", strconv.Itoa(b.Port), "-i", id}, args...)...)
	waitFor(t, func() bool { return b.Logged("Sending SUBACK to " + id) }, "the subscription")
	return p
}

func TestSubPrintsWhatPubPublishes(t *testing.T) {
	b := startBroker(t)
	port := strconv.Itoa(b.Port)
	for _, v := range []string{"311", "5"} {
		for _, q := range []string{"0", "1", "2"} {
			t.Run("V"+v+"/q"+q, func(t *testing.T) {
				id := "sub-" + v + "-" + q
				sub := subscribed(t, b, id, "-V", v, "-q", q, "-v", "-C", "1", "-t", "sensors/+/temp")
				_, stderr, code := ctl(t, "", "pub", "-p", port, "-V", v, "-q", q, "-t", "sensors/bme280/temp", "-m", "21.5")
				if code != 0 {
					t.Fatalf("pub exit %d: %s", code, stderr)
				}
				if code := sub.wait(t); code != 0 {
					t.Fatalf("sub exit %d: %s", code, sub.stderr.String())
				}
				if got := sub.stdout.String(); got != "sensors/bme280/temp 21.5\n" {
					t.Fatalf("sub printed %q", got)
				}
			})
		}
	}
}

func TestSubPositionalFilterAndCount(t *testing.T) {
	b := startBroker(t)
	port := strconv.Itoa(b.Port)
	// Flags after the positional filter are accepted too.
	sub := subscribed(t, b, "pos", "#", "-C", "2", "-q", "1")
	for _, m := range []string{"one", "two", "three"} {
		if _, stderr, code := ctl(t, "", "pub", "-p", port, "-q", "1", "-t", "a/b", "-m", m); code != 0 {
			t.Fatalf("pub: %d %s", code, stderr)
		}
	}
	if code := sub.wait(t); code != 0 {
		t.Fatalf("sub exit %d: %s", code, sub.stderr.String())
	}
	if got := sub.stdout.String(); got != "one\ntwo\n" {
		t.Fatalf("sub printed %q, want the first two payloads", got)
	}
}

func TestPubFileStdinNullAndRetain(t *testing.T) {
	b := startBroker(t)
	port := strconv.Itoa(b.Port)
	file := filepath.Join(t.TempDir(), "payload.json")
	os.WriteFile(file, []byte(`{"t":21.5}`), 0o600)
	for _, tc := range []struct {
		name, stdin string
		args        []string
		want        string
	}{
		{"file", "", []string{"-f", file}, `{"t":21.5}`},
		{"stdin", "from stdin", []string{"-s"}, "from stdin"},
		{"null", "", []string{"-n"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := "retained/" + tc.name
			// The null message on a topic clears its retained message, so
			// publish something first that it replaces.
			ctl(t, "", "pub", "-p", port, "-r", "-q", "1", "-t", topic, "-m", "before")
			_, stderr, code := ctl(t, tc.stdin, append([]string{"pub", "-p", port, "-r", "-q", "1", "-t", topic}, tc.args...)...)
			if code != 0 {
				t.Fatalf("pub exit %d: %s", code, stderr)
			}
			if tc.want == "" {
				// Nothing retained any more: the subscriber times out.
				out, _, code := ctl(t, "", "sub", "-p", port, "-t", topic, "-C", "1", "-W", "1")
				if code != 27 || out != "" {
					t.Fatalf("after a null retained message, sub printed %q and exited %d, want nothing and 27", out, code)
				}
				return
			}
			out, stderr, code := ctl(t, "", "sub", "-p", port, "-t", topic, "-C", "1")
			if code != 0 || out != tc.want+"\n" {
				t.Fatalf("sub printed %q, exit %d (%s)", out, code, stderr)
			}
		})
	}
}

func TestBadUsageExits2(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"sub"},
		{"sub", "--nope", "x"},
		{"sub", "-q", "3", "x"},
		{"sub", "-V", "4.5", "x"},
		{"sub", "a/#/b"},
		{"sub", "-C", "many", "x"},
		{"pub", "-m", "x"},
		{"pub", "-t", "x"},
		{"pub", "-t", "x", "-m", "a", "-n"},
		{"pub", "-t", "a/+", "-m", "x"},
		{"pub", "-t", "x", "-m", "y", "extra"},
	} {
		_, stderr, code := ctl(t, "", args...)
		if code != 2 {
			t.Errorf("gatewayctl %q: exit %d, want 2", args, code)
		}
		if !strings.Contains(stderr, "Usage") {
			t.Errorf("gatewayctl %q: no usage in %q", args, stderr)
		}
	}
}

func TestHelpExits0(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"sub", "-help"}, {"pub", "--help"}} {
		if _, _, code := ctl(t, "", args...); code != 0 {
			t.Errorf("gatewayctl %q: exit %d", args, code)
		}
	}
}

func TestConnectionFailureExits1(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	for _, args := range [][]string{
		{"pub", "-p", port, "-t", "x", "-m", "y"},
		{"sub", "-p", port, "-t", "x"},
		{"pub", "--url", "mqtt://127.0.0.1:" + port, "-t", "x", "-m", "y"},
	} {
		_, stderr, code := ctl(t, "", args...)
		if code != 1 || !strings.Contains(stderr, "refused") {
			t.Errorf("gatewayctl %q: exit %d, stderr %q", args, code, stderr)
		}
	}
}

func TestSubURLAndV311(t *testing.T) {
	b := startBroker(t)
	sub := start(t, "sub", "--url", "mqtt://"+b.Addr(), "-V", "311", "-i", "url-sub", "-t", "u/1", "-t", "u/2", "-C", "2", "-v")
	waitFor(t, func() bool { return b.Logged("Sending SUBACK to url-sub") }, "the subscription")
	ctl(t, "", "pub", "--url", "tcp://"+b.Addr(), "-t", "u/2", "-m", "b")
	ctl(t, "", "pub", "--url", "mqtt://"+b.Addr(), "-t", "u/1", "-m", "a")
	if code := sub.wait(t); code != 0 {
		t.Fatalf("exit %d: %s", code, sub.stderr.String())
	}
	if got := sub.stdout.String(); got != "u/2 b\nu/1 a\n" {
		t.Fatalf("printed %q", got)
	}
}
