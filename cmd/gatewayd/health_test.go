package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/state"
	"gatewayd/internal/testbroker"
)

type fakeHealth struct{ writeErrors uint64 }

func (f *fakeHealth) Stats() state.Stats      { return state.Stats{WriteErrors: f.writeErrors} }
func (f *fakeHealth) Damaged() (bool, string) { return false, "" }

func TestHealthProbeFailsOnStoreWriteErrorsAndPassesWhenTheyStop(t *testing.T) {
	srv := testbroker.Start(t, nil)

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
	srv := testbroker.Start(t, nil)
	srv.Shutdown(context.Background()) // a stopped broker answers nobody
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := newHealthProbe(srv, nil).check(ctx); err == nil {
		t.Error("probe of a stopped broker passed")
	}
}
