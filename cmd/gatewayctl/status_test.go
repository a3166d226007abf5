package main

import (
	"strings"
	"testing"
	"time"

	"gatewayd/broker"
)

func TestStatusShowsBrokerBridgesAndDevices(t *testing.T) {
	srv, port := startGatewayd(t, func(c *broker.Config, o *broker.Options) {
		c.SysInterval = time.Hour // published once at start, retained
		o.Version = "v7.7.7"
	})
	// What a bridge publishes.
	srv.PublishSys("$SYS/broker/bridge/cloud/state", "connected")
	srv.PublishSys("$SYS/broker/bridge/cloud/queued/messages", "12")
	srv.PublishSys("$SYS/broker/bridge/cloud/queued/oldest_age_seconds", "4")
	// What a device publishes, retained.
	for _, m := range [][2]string{{"gatewayd/gw1/porch/status", "online"}, {"gatewayd/gw1/porch/temperature", "21.5"}} {
		if _, stderr, code := ctl(t, "", "pub", "-p", port, "-q", "1", "-r", "-t", m[0], "-m", m[1]); code != 0 {
			t.Fatalf("pub: %s", stderr)
		}
	}

	out, stderr, code := ctl(t, "", "status", "-p", port, "-w", "3s")
	if code != 0 {
		t.Fatalf("status exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"gatewayd v7.7.7 at 127.0.0.1:" + port + ", up ",
		"clients    0 connected", // as of the last $SYS publication (at start)
		"  cloud  connected  12 queued (oldest 4s)",
		"  gw1/porch  online  gatewayd/gw1/porch/temperature = 21.5",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

func TestStatusOfABrokerWithoutSysFails(t *testing.T) {
	_, port := startGatewayd(t, nil) // sys_interval 0: no $SYS topics
	_, stderr, code := ctl(t, "", "status", "-p", port, "-w", "500ms")
	if code != 1 || !strings.Contains(stderr, "no $SYS/broker topics") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}
