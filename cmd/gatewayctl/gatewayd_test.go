package main

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"gatewayd/broker"
)

// startGatewayd runs gatewayd's own broker in the test process, on a
// loopback port and without $SYS publishing unless setup (if not nil)
// changes its configuration and options, and returns it with its port.
func startGatewayd(t *testing.T, setup func(*broker.Config, *broker.Options)) (*broker.Server, string) {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Address: "127.0.0.1:0"}}
	cfg.SysInterval = 0
	opts := broker.Options{Logger: slog.New(slog.DiscardHandler)}
	if setup != nil {
		setup(&cfg, &opts)
	}
	srv, err := broker.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, strconv.Itoa(srv.Addrs()[0].(*net.TCPAddr).Port)
}

func TestAgainstGatewaydBroker(t *testing.T) {
	_, port := startGatewayd(t, nil)
	// Retained: published first, received by a later subscriber.
	if _, stderr, code := ctl(t, "", "pub", "-p", port, "-q", "1", "-r", "-t", "gw/status", "-m", "online"); code != 0 {
		t.Fatalf("pub exit %d: %s", code, stderr)
	}
	out, stderr, code := ctl(t, "", "sub", "-p", port, "-V", "311", "-v", "-C", "1", "gw/#")
	if code != 0 || out != "gw/status online\n" {
		t.Fatalf("sub printed %q, exit %d: %s", out, code, stderr)
	}
	// Live: publish until the subscriber, started first, has its message.
	sub := start(t, "sub", "-p", port, "-q", "2", "-C", "1", "live/+")
	for i := 0; ; i++ {
		select {
		case <-sub.done:
		default:
			if i == 200 {
				t.Fatal("the subscriber never received a message")
			}
			ctl(t, "", "pub", "-p", port, "-q", "2", "-t", "live/x", "-m", "hello")
			continue
		}
		break
	}
	if code := sub.wait(t); code != 0 || sub.stdout.String() != "hello\n" {
		t.Fatalf("sub printed %q, exit %d: %s", sub.stdout.String(), code, sub.stderr.String())
	}
}
