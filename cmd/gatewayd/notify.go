package main

// systemd's notify protocol (Type=notify, WatchdogSec=): READY=1 once
// everything is up, STATUS= lines a person can read, WATCHDOG=1 only while a
// health probe passes, RELOADING=1 and STOPPING=1. Without NOTIFY_SOCKET (not
// under systemd) every call here does nothing.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"gatewayd/broker"
	"gatewayd/broker/state"
)

// sdNotify sends state to the service manager, if there is one.
func sdNotify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("systemd: notify failed", "state", state, "err", err)
	}
}

// sdReloading tells systemd a reload has begun; READY=1 ends it. Newer
// systemd wants the monotonic time with RELOADING=1.
func sdReloading(log *slog.Logger) {
	var ts unix.Timespec
	msg := "RELOADING=1"
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) == nil {
		msg += fmt.Sprintf("\nMONOTONIC_USEC=%d", ts.Nano()/1000)
	}
	sdNotify(log, msg)
}

// statusLine is the one-line STATUS= shown by systemctl status, such as
// "MQTT on 127.0.0.1:1883; 3 clients; 3 devices; bridge cloud connected".
// parts are what other components add (devices, bridges), in order; each is
// asked at the time of the line.
func statusLine(srv *broker.Server, parts ...func() string) string {
	var addrs []string
	for _, a := range srv.Addrs() {
		addrs = append(addrs, a.String())
	}
	st := srv.Stats()
	out := []string{"MQTT on " + strings.Join(addrs, ", ")}
	out = append(out, plural(int(st.ClientsConnected), "client"))
	for _, part := range parts {
		if p := part(); p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, "; ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// healthProbe checks what must work for gatewayd to be worth keeping alive:
// the store has had no failing writes since the previous check, and the
// broker answers a client through its connection path (CONNECT, PINGREQ)
// before ctx's deadline. A broker stuck on a lock or a store that cannot write
// fails it, so systemd's watchdog restarts the service.
type healthProbe struct {
	srv        *broker.Server
	store      state.Health // nil: no store to check
	lastErrors uint64
}

func newHealthProbe(srv *broker.Server, store state.Health) *healthProbe {
	p := &healthProbe{srv: srv, store: store}
	if store != nil {
		p.lastErrors = store.Stats().WriteErrors
	}
	return p
}

func (p *healthProbe) check(ctx context.Context) error {
	if p.store != nil {
		n := p.store.Stats().WriteErrors
		failed := n - p.lastErrors
		p.lastErrors = n
		if failed > 0 {
			return fmt.Errorf("store: %d failed writes since the last check", failed)
		}
	}
	if err := pingBroker(ctx, p.srv); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}

// probeListener names the in-process connection of the health probe; no
// listener has this name, so it is treated as an in-process client.
const probeListener = "gatewayd-health"

// pingBroker connects to srv over an in-process pipe with MQTT 3.1.1 (clean
// session), sends PINGREQ and waits for PINGRESP.
func pingBroker(ctx context.Context, srv *broker.Server) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	budget := time.Until(deadline)
	c, s := net.Pipe()
	defer c.Close()
	// A broker that never answers keeps this goroutine; the watchdog then
	// restarts the whole process.
	go srv.ServeConn(s, probeListener)
	c.SetDeadline(deadline)
	id := "gatewayd-health-probe"
	body := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, byte(len(id))}
	body = append(body, id...)
	if _, err := c.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		return fmt.Errorf("sending CONNECT: %w", err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fmt.Errorf("waiting for CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		return fmt.Errorf("CONNACK % x, want return code 0", ack)
	}
	if _, err := c.Write([]byte{0xC0, 0}); err != nil {
		return fmt.Errorf("sending PINGREQ: %w", err)
	}
	resp := make([]byte, 2)
	if _, err := io.ReadFull(c, resp); err != nil {
		return fmt.Errorf("waiting for PINGRESP: %w", err)
	}
	if resp[0] != 0xD0 {
		return fmt.Errorf("got % x, want PINGRESP", resp)
	}
	// DISCONNECT, then wait for the broker to close its end, so that the
	// probe is gone from the client count before the status line is made.
	// The close gets a budget of its own as long as the whole probe's, not
	// what is left of it: a busy moment must neither leave the probe counted
	// in the status line nor pass unseen. Probe and close together stay
	// within two thirds of the watchdog interval.
	c.Write([]byte{0xE0, 0})
	c.SetDeadline(time.Now().Add(budget))
	if _, err := io.Copy(io.Discard, c); err != nil {
		return fmt.Errorf("waiting for the broker to close the probe's connection: %w", err)
	}
	return nil
}

// runWatchdog pings systemd's watchdog (WATCHDOG_USEC) at a third of its
// interval, each time the probe passes within that third (the close of its
// connection may take another). It returns when ctx
// ends; without a watchdog it returns at once.
func runWatchdog(ctx context.Context, log *slog.Logger, check func(context.Context) error, status func() string) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd: watchdog settings ignored", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	every := interval / 3
	tk := time.NewTicker(every)
	defer tk.Stop()
	healthy := true
	for {
		pctx, cancel := context.WithTimeout(ctx, every)
		err := check(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Error("health check failed: not pinging the watchdog", "err", err)
			healthy = false
			sdNotify(log, "STATUS=unhealthy: "+err.Error())
		default:
			if !healthy {
				log.Info("health check passes again")
			}
			healthy = true
			sdNotify(log, "WATCHDOG=1\nSTATUS="+status())
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}
