package main

import (
	"context"
	"log/slog"
	"time"

	"gatewayd/broker"
	"gatewayd/broker/state"
	"gatewayd/metrics"
)

// startMetrics serves /metrics on cfg.Address (nothing when it is empty) and
// returns the function that stops it. Components wired later (bridges,
// devices) add their Stats to src.
func startMetrics(cfg metrics.Config, srv *broker.Server, store state.Health, log *slog.Logger) (stop func(), err error) {
	src := metrics.Sources{Version: versionString(), Broker: srv.Stats, Store: store}
	ms, err := metrics.Listen(cfg, src, log)
	if err != nil || ms == nil {
		return func() {}, err
	}
	log.Info("metrics: serving /metrics", "address", ms.Addr().String())
	done := make(chan struct{})
	go func() { ms.Serve(); close(done) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms.Shutdown(ctx)
		<-done
	}, nil
}
