// Package testbroker starts gatewayd's own MQTT broker inside a test
// process: the documented defaults, one listener on a free loopback port, no
// $SYS publishing and its log discarded, unless the test changes these; it is
// shut down when the test ends.
//
// Tests of the client, the command-line tools and the daemon use it as the
// peer they talk to. Only tests import it.
package testbroker

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"gatewayd/broker"
	"gatewayd/internal/testenv"
)

// ShutdownTimeout bounds the shutdown at the end of the test (stretched by
// testenv.Scale).
const ShutdownTimeout = 10 * time.Second

// Start starts a broker; setup, if not nil, changes its configuration and
// options first. A test may shut it down itself: shutting down twice is
// harmless.
func Start(t testing.TB, setup func(*broker.Config, *broker.Options)) *broker.Server {
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
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Scale(ShutdownTimeout))
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("broker shutdown: %v", err)
		}
	})
	return srv
}

// Addr returns the address of srv's first listener, "127.0.0.1:port".
func Addr(srv *broker.Server) string { return srv.Addrs()[0].String() }

// URL returns the address of srv's first listener as an MQTT URL.
func URL(srv *broker.Server) string { return "mqtt://" + Addr(srv) }

// Port returns the port of srv's first listener.
func Port(srv *broker.Server) string {
	return strconv.Itoa(srv.Addrs()[0].(*net.TCPAddr).Port)
}
