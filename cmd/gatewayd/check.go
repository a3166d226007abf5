package main

import (
	"fmt"
	"io"

	"gatewayd/drivers"
)

// printPlan says what gatewayd would run with cfg (gatewayd --check, which
// `gatewayctl check` runs): one line per listener, bridge and device.
func printPlan(w io.Writer, name string, cfg Config) {
	fmt.Fprintf(w, "%s: valid\n", name)
	fmt.Fprintf(w, "gateway_id %s, data_dir %s\n", cfg.GatewayID, cfg.DataDir)
	if len(cfg.Broker.Listeners) == 0 {
		fmt.Fprintln(w, "listener  default  mqtt on 127.0.0.1:1883")
	}
	for i, l := range cfg.Broker.Listeners {
		typ := l.Type
		if typ == "" {
			typ = "mqtt"
		}
		if l.TLS != nil {
			typ += " with TLS"
		}
		fmt.Fprintf(w, "listener  %s  %s on %s\n", listenerName(cfg.Broker, i), typ, l.Address)
	}
	if cfg.Broker.PasswordFile != "" {
		fmt.Fprintf(w, "passwords from %s\n", cfg.Broker.PasswordFile)
	}
	if cfg.Broker.ACLFile != "" {
		fmt.Fprintf(w, "ACL from %s\n", cfg.Broker.ACLFile)
	}
	if cfg.Metrics.Address != "" {
		fmt.Fprintf(w, "metrics   http://%s/metrics\n", cfg.Metrics.Address)
	}
	for _, b := range cfg.Bridges {
		profile := b.Profile
		if profile == "" {
			profile = "generic"
		}
		fmt.Fprintf(w, "bridge    %s  %s (%s)\n", b.Name, b.URL, profile)
	}
	for _, d := range cfg.Devices {
		every := d.Interval
		if every == 0 {
			every = drivers.DefaultInterval
		}
		fmt.Fprintf(w, "device    %s  %s, every %s\n", d.Name, d.Driver, every)
	}
}
