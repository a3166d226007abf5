package main

import (
	"testing"

	"gatewayd/broker"
	"gatewayd/internal/testbroker"
)

// startGatewayd runs gatewayd's own broker in the test process (no $SYS
// publishing unless setup, if not nil, changes that) and returns it with its
// port.
func startGatewayd(t *testing.T, setup func(*broker.Config, *broker.Options)) (*broker.Server, string) {
	t.Helper()
	srv := testbroker.Start(t, setup)
	return srv, testbroker.Port(srv)
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
