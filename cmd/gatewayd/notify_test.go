package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gatewayd/internal/testenv"
)

// notifySocket is a unixgram socket standing in for systemd's NOTIFY_SOCKET;
// each datagram gatewayd sends arrives on msgs.
type notifySocket struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A socket path must fit in 108 bytes: t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "gwn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &notifySocket{path: filepath.Join(dir, "notify"), msgs: make(chan string, 1000)}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			select {
			case n.msgs <- string(buf[:k]):
			default:
			}
		}
	}()
	return n
}

// next returns the next datagram that has a line starting with prefix,
// with all datagrams skipped before it.
func (n *notifySocket) next(t *testing.T, prefix string) (string, []string) {
	t.Helper()
	var skipped []string
	timeout := time.After(hangGuard)
	for {
		select {
		case m := <-n.msgs:
			for _, l := range strings.Split(m, "\n") {
				if strings.HasPrefix(l, prefix) {
					return m, skipped
				}
			}
			skipped = append(skipped, m)
		case <-timeout:
			t.Fatalf("no %q from gatewayd; got %q", prefix, skipped)
		}
	}
}

func field(msg, key string) string {
	for _, l := range strings.Split(msg, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	return ""
}

func TestSystemdNotifyReadyStatusWatchdogAndStopping(t *testing.T) {
	n := listenNotify(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	// A short watchdog, so that several pings come during the test. Each
	// health probe must pass within a third of it, so under qemu-user the
	// watchdog is stretched like every other deadline (testenv.Scale).
	watchdog := testenv.Scale(300 * time.Millisecond)
	p := start(t, dir, []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=" + strconv.FormatInt(watchdog.Microseconds(), 10)}, nil,
		"--config", writeConfig(t, dir, brokerConfig(dir, addr)))

	ready, before := n.next(t, "READY=1")
	if len(before) > 0 {
		t.Errorf("sent before READY=1: %q", before)
	}
	// READY=1 means the port accepts MQTT clients already.
	c, ack := mqttConnect(t, addr, 4)
	if ack[3] != 0 {
		t.Errorf("CONNACK % x right after READY=1", ack)
	}
	if st := field(ready, "STATUS"); !strings.HasPrefix(st, "MQTT on "+addr+"; ") {
		t.Errorf("STATUS=%q with READY=1, want it to start with \"MQTT on %s; \"", st, addr)
	}

	for i := 0; i < 3; i++ {
		ping, _ := n.next(t, "WATCHDOG=1")
		if i == 2 && !strings.Contains(field(ping, "STATUS"), "1 client") {
			t.Errorf("STATUS with a client connected: %q", field(ping, "STATUS"))
		}
	}
	c.Close()

	p.signal(syscall.SIGTERM)
	stopping, _ := n.next(t, "STOPPING=1")
	if field(stopping, "STATUS") == "" {
		t.Errorf("STOPPING=1 without a STATUS: %q", stopping)
	}
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), "health check failed") {
		t.Errorf("health check failed on a healthy gatewayd:\n%s", p.stderr.String())
	}
}

func TestSystemdNotifyReloadingThenReadyOnSIGHUP(t *testing.T) {
	n := listenNotify(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	p := start(t, dir, []string{"NOTIFY_SOCKET=" + n.path}, nil,
		"--config", writeConfig(t, dir, brokerConfig(dir, addr)))
	n.next(t, "READY=1")
	p.signal(syscall.SIGHUP)
	reloading, _ := n.next(t, "RELOADING=1")
	if field(reloading, "MONOTONIC_USEC") == "" {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", reloading)
	}
	n.next(t, "READY=1")
	p.signal(syscall.SIGTERM)
	n.next(t, "STOPPING=1")
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

// Without NOTIFY_SOCKET nothing is sent and nothing is logged about it.
func TestNoNotifySocketIsQuiet(t *testing.T) {
	dir := t.TempDir()
	p := start(t, dir, nil, nil, "--config", writeConfig(t, dir, brokerConfig(dir, freeAddr(t))))
	p.waitListening()
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d", code)
	}
	if strings.Contains(p.stderr.String(), "systemd") {
		t.Errorf("stderr mentions systemd:\n%s", p.stderr.String())
	}
}
