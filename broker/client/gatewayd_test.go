package client

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"gatewayd/broker"
)

// startGatewayd starts gatewayd's own broker on a loopback port and returns
// its URL; it is shut down when the test ends.
func startGatewayd(t testing.TB) string {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Address: "127.0.0.1:0"}}
	cfg.SysInterval = 0
	srv, err := broker.New(cfg, broker.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("gatewayd broker shutdown: %v", err)
		}
	})
	return "mqtt://" + srv.Addrs()[0].String()
}
