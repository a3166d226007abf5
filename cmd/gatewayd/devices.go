package main

import (
	"context"
	"log/slog"
	"net"

	"gatewayd/board"
	"gatewayd/broker"
	"gatewayd/drivers"
)

// runningDevices is the drivers' Runner on this board, started after the
// broker and stopped before it.
type runningDevices struct {
	cancel context.CancelFunc
	done   chan struct{}
	hw     *board.Board
	runner *drivers.Runner // for Stats (metrics, systemd status)
}

// startDevices runs the configured devices on the board, each an MQTT client
// of the embedded broker over an in-process pipe (or of broker_url). With no
// devices it does nothing.
func startDevices(cfg Config, srv *broker.Server, log *slog.Logger) (*runningDevices, error) {
	if len(cfg.Devices) == 0 {
		return nil, nil
	}
	hw := board.New("/")
	info := hw.Info()
	dial := func(ctx context.Context) (net.Conn, error) {
		c, s := net.Pipe()
		go srv.ServeConn(s, "devices")
		return c, nil
	}
	r, err := drivers.NewRunner(cfg.Drivers(), cfg.GatewayID, hw, dial,
		drivers.BoardInfo{Model: info.Model, Serial: info.Serial}, log.With("component", "drivers"))
	if err != nil {
		hw.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &runningDevices{cancel: cancel, done: make(chan struct{}), hw: hw, runner: r}
	go func() {
		defer close(d.done)
		r.Run(ctx)
	}()
	log.Info("devices started", "devices", len(cfg.Devices), "board", info.Model)
	return d, nil
}

// stop ends every device (outputs to their safe state, offline published)
// and waits for them, at most until ctx ends.
func (d *runningDevices) stop(ctx context.Context) {
	if d == nil {
		return
	}
	d.cancel()
	select {
	case <-d.done:
	case <-ctx.Done():
	}
	d.hw.Close()
}
