package main

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"syscall"

	"gatewayd/bridge"
	"gatewayd/broker"
	"gatewayd/config"
)

// reloadBroker applies next to the running broker (password file, ACL file,
// listeners: see broker.Server.Reload; the broker logs each listener it
// opens or closes in detail) and logs, in one line, the listeners opened and
// closed. A listener reopened because its address, type, path or TLS
// changed is among both. An address that cannot be bound fails the whole
// reload, the broker keeping its listeners; the error then says where in
// file the address is set.
func reloadBroker(log *slog.Logger, srv *broker.Server, file *config.File, next broker.Config, builtin bool) error {
	before := srv.Listeners()
	if err := srv.Reload(next); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EACCES) {
			err = errors.Join(err, errors.New(listenHint(file, next, err, builtin)))
		}
		return err
	}
	after := srv.Listeners()
	opened, closed := listenerChanges(before, after)
	if len(opened)+len(closed) > 0 {
		log.Info("listeners changed", "opened", opened, "closed", closed)
	}
	return nil
}

// listenerChanges names the listeners in after but not in before (opened)
// and the other way round (closed), as "name address kind".
func listenerChanges(before, after []broker.ListenerInfo) (opened, closed []string) {
	in := func(ls []broker.ListenerInfo, id uint64) bool {
		for _, l := range ls {
			if l.ID == id {
				return true
			}
		}
		return false
	}
	describe := func(l broker.ListenerInfo) string { return l.Name + " " + l.Addr.String() + " " + l.Kind }
	for _, l := range before {
		if !in(after, l.ID) {
			closed = append(closed, describe(l))
		}
	}
	for _, l := range after {
		if !in(before, l.ID) {
			opened = append(opened, describe(l))
		}
	}
	return opened, closed
}

// applyComponents brings the devices and bridges from running's
// configuration to next's after a SIGHUP, restarting only what changed: the
// devices' runner when the devices section changed, and each bridge (by
// name) that was added, removed or changed. Clients of the broker, and
// bridges and devices that did not change, are not touched. *running becomes
// next for these sections.
func applyComponents(ctx context.Context, log *slog.Logger, srv *broker.Server, running *Config, next Config,
	devices **runningDevices, bridges *[]*bridge.Bridge, parts *components) {
	stopCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), shutdownTimeout)
	}
	if !reflect.DeepEqual(running.Drivers(), next.Drivers()) {
		sctx, cancel := stopCtx()
		(*devices).stop(sctx)
		cancel()
		*devices = nil
		d, err := startDevices(next, srv, log)
		if err != nil {
			log.Error("devices not restarted", "err", err)
		} else {
			*devices = d
			log.Info("devices restarted with the new configuration", "devices", len(next.Devices))
		}
		running.TopicPrefix, running.Payload, running.HomeAssistant = next.TopicPrefix, next.Payload, next.HomeAssistant
		running.BrokerURL, running.Devices = next.BrokerURL, next.Devices
	}

	old := map[string]bridge.Config{}
	for _, c := range running.Bridges {
		old[c.Name] = c
	}
	want := map[string]bridge.Config{}
	for _, c := range next.Bridges {
		want[c.Name] = c
	}
	var kept []*bridge.Bridge
	for _, b := range *bridges {
		if c, ok := want[b.Name()]; ok && reflect.DeepEqual(c, old[b.Name()]) {
			kept = append(kept, b)
			continue
		}
		sctx, cancel := stopCtx()
		if err := b.Stop(sctx); err != nil {
			log.Error("bridge did not stop in time", "bridge", b.Name(), "err", err)
		}
		cancel()
		log.Info("bridge stopped for the new configuration", "bridge", b.Name())
	}
	endRemovedBridges(next, srv, log)
	running.Bridges = nil
	for _, c := range next.Bridges {
		if o, ok := old[c.Name]; ok && reflect.DeepEqual(o, c) && hasBridge(kept, c.Name) {
			running.Bridges = append(running.Bridges, c)
			continue
		}
		b, err := bridge.New(c, bridge.Options{GatewayID: next.GatewayID, Broker: srv, Logger: log, SysInterval: next.Broker.SysInterval})
		if err == nil {
			err = b.Start(ctx)
		}
		if err != nil {
			log.Error("bridge not started", "bridge", c.Name, "err", err)
			continue
		}
		kept = append(kept, b)
		running.Bridges = append(running.Bridges, c)
		log.Info("bridge started with the new configuration", "bridge", c.Name)
	}
	*bridges = kept
	parts.attach(*devices, *bridges)
}

func hasBridge(bs []*bridge.Bridge, name string) bool {
	for _, b := range bs {
		if b.Name() == name {
			return true
		}
	}
	return false
}
