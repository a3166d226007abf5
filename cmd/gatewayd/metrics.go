package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"gatewayd/bridge"
	"gatewayd/broker"
	"gatewayd/broker/state"
	"gatewayd/drivers"
	"gatewayd/metrics"
)

// components are the parts started after the broker whose Stats metrics and
// the systemd status read; set once they run.
type components struct {
	devices atomic.Pointer[runningDevices]
	bridges atomic.Pointer[[]*bridge.Bridge]
}

func (c *components) attach(d *runningDevices, bs []*bridge.Bridge) {
	c.devices.Store(d)
	c.bridges.Store(&bs)
}

func (c *components) deviceStats() []drivers.DeviceStats {
	if d := c.devices.Load(); d != nil && d.runner != nil {
		return d.runner.Stats()
	}
	return nil
}

func (c *components) bridgeStats() map[string]bridge.Stats {
	out := map[string]bridge.Stats{}
	if bs := c.bridges.Load(); bs != nil {
		for _, b := range *bs {
			out[b.Name()] = b.Stats()
		}
	}
	return out
}

// statusParts are the devices' and bridges' parts of the systemd status line:
// "3 devices, 2 online" and "bridge cloud connected, 12 queued".
func (c *components) statusParts() []func() string {
	return []func() string{
		func() string {
			ds := c.deviceStats()
			if len(ds) == 0 {
				return ""
			}
			on := 0
			for _, d := range ds {
				if d.Online {
					on++
				}
			}
			return fmt.Sprintf("%s, %d online", plural(len(ds), "device"), on)
		},
		func() string {
			s := ""
			if bs := c.bridges.Load(); bs != nil {
				for _, b := range *bs {
					st := b.Stats()
					if s != "" {
						s += "; "
					}
					s += fmt.Sprintf("bridge %s %s", b.Name(), st.State)
					if st.QueuedMessages > 0 {
						s += fmt.Sprintf(", %d queued", st.QueuedMessages)
					}
				}
			}
			return s
		},
	}
}

// startMetrics serves /metrics on cfg.Address (nothing when it is empty) and
// returns the function that stops it. Devices and bridges appear once
// attached to parts.
func startMetrics(cfg metrics.Config, srv *broker.Server, store state.Health, parts *components, log *slog.Logger) (stop func(), err error) {
	src := metrics.Sources{Version: versionString(), Broker: srv.Stats, Store: store,
		Bridges: parts.bridgeStats, Devices: parts.deviceStats}
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
