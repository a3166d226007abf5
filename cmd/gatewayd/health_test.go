package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"gatewayd/broker"
	"gatewayd/broker/state"
)

type fakeHealth struct{ writeErrors uint64 }

func (f *fakeHealth) Stats() state.Stats      { return state.Stats{WriteErrors: f.writeErrors} }
func (f *fakeHealth) Damaged() (bool, string) { return false, "" }

func TestHealthProbeFailsOnStoreWriteErrorsAndPassesWhenTheyStop(t *testing.T) {
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Name: "t", Address: "127.0.0.1:0"}}
	srv, err := broker.New(cfg, broker.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	store := &fakeHealth{writeErrors: 3} // failures before the probe began do not count
	p := newHealthProbe(srv, store)
	check := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		return p.check(ctx)
	}
	if err := check(); err != nil {
		t.Fatalf("healthy broker and store: %v", err)
	}
	store.writeErrors = 5
	if err := check(); err == nil || !strings.Contains(err.Error(), "2 failed writes") {
		t.Errorf("after 2 failed writes: %v", err)
	}
	if err := check(); err != nil {
		t.Errorf("no new failures: %v", err)
	}
}

func TestHealthProbeFailsWhenTheBrokerDoesNotAnswer(t *testing.T) {
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Name: "t", Address: "127.0.0.1:0"}}
	srv, err := broker.New(cfg, broker.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown(context.Background()) // a stopped broker answers nobody
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := newHealthProbe(srv, nil).check(ctx); err == nil {
		t.Error("probe of a stopped broker passed")
	}
}
