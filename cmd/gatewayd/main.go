// Command gatewayd is the gateway daemon: it runs the local MQTT broker with
// the configuration given by --config, or the built-in one (default.yaml).
// SIGHUP re-reads the configuration and applies what can change while running
// (password file, ACL file, listeners, devices, bridges, log level); SIGINT
// and SIGTERM stop it.
//
// Exit codes: 0 after a clean shutdown on SIGINT or SIGTERM, 1 when the
// broker cannot start or stop, 2 for a bad command line or configuration.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"gatewayd/bridge"
	"gatewayd/broker"
	"gatewayd/broker/state"
	"gatewayd/config"
)

// Set at link time: -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
var (
	version = "dev"
	commit  = "unknown"
	date    = "unknown"
)

//go:embed default.yaml
var defaultYAML []byte

// defaultName names the built-in configuration in messages.
const defaultName = "(built-in default.yaml)"

// shutdownTimeout bounds how long a signal waits for clients to be let go.
const shutdownTimeout = 10 * time.Second

const (
	exitOK     = 0
	exitStart  = 1
	exitConfig = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func versionString() string {
	v := version
	if v == "dev" {
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return v
}

func run(args []string, stdout io.Writer, stderr *os.File) int {
	fs := flag.NewFlagSet("gatewayd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "read the configuration from `FILE` (default: the built-in configuration, listening on 127.0.0.1:1883)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	checkOnly := fs.Bool("check", false, "check the configuration, print what would run and exit (0 valid, 2 not)")
	logLevel := fs.String("log-level", "", "log `level`: debug, info, warn or error (overrides log.level)")
	logFormat := fs.String("log-format", "", "log `format`: text or json (overrides log.format)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gatewayd [--config FILE] [--log-level LEVEL] [--log-format FORMAT]\n       gatewayd --version\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gatewayd: unexpected argument %q (the configuration file is given with --config)\n", fs.Arg(0))
		return exitConfig
	}
	if *showVersion {
		fmt.Fprintf(stdout, "gatewayd %s (commit %s, built %s, %s %s/%s)\n",
			versionString(), commit, date, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	}

	cfg := DefaultConfig()
	var file *config.File
	var err error
	if *configPath != "" {
		file, err = config.ReadFile(*configPath)
	} else {
		file, err = config.Parse(defaultName, defaultYAML)
	}
	if err == nil {
		err = file.Decode(&cfg)
	}
	if err == nil {
		err = applyLogFlags(&cfg.Log, *logLevel, *logFormat)
	}
	if err != nil {
		printErr(stderr, err)
		return exitConfig
	}
	if *checkOnly {
		printPlan(stdout, file.Name, cfg)
		return exitOK
	}

	var level slog.LevelVar
	log := newLogger(cfg.Log, &level, stderr)

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		printErr(stderr, file.Locate(config.Errorf("data_dir", "cannot create %s: %v", cfg.DataDir, err)))
		return exitStart
	}

	// Catch signals before anything announces that gatewayd is up, so that a
	// signal sent as soon as the start-up line appears shuts down cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	storeDir := filepath.Join(cfg.DataDir, "store")
	opts := cfg.Store.Options()
	opts.Logf = func(format string, args ...any) { log.Warn("store: " + fmt.Sprintf(format, args...)) }
	store, err := state.OpenDurable(storeDir, opts)
	if err != nil {
		printErr(stderr, file.Locate(config.Errorf("data_dir", "%v", err)))
		return exitStart
	}
	// A store found damaged was moved aside (or its newest log cut at the
	// damage, a copy kept); the broker logs that at start
	// and raises $SYS/broker/store/damaged.

	srv, err := broker.New(cfg.Broker, broker.Options{Store: store, Logger: log, Version: versionString()})
	if err != nil {
		store.Close()
		printErr(stderr, err)
		return exitConfig
	}
	if err := srv.Start(); err != nil {
		store.Close()
		printErr(stderr, err)
		if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.EACCES) {
			fmt.Fprintln(stderr, "gatewayd: "+listenHint(file, cfg.Broker, err, *configPath == ""))
		}
		return exitStart
	}
	var parts components
	stopMetrics, err := startMetrics(cfg.Metrics, srv, store, &parts, log)
	if err != nil {
		srv.Shutdown(context.Background())
		printErr(stderr, file.Locate(err))
		return exitStart
	}
	defer stopMetrics()
	for i, a := range srv.Addrs() {
		fmt.Fprintf(stdout, "gatewayd %s: MQTT broker listening on %s (listener %s)\n", versionString(), a, listenerName(cfg.Broker, i))
	}
	devices, err := startDevices(cfg, srv, log)
	if err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		srv.Shutdown(sctx)
		cancel()
		printErr(stderr, file.Locate(err))
		return exitConfig
	}
	bridges, err := startBridges(ctx, cfg, srv, log)
	if err != nil {
		printErr(stderr, err)
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		srv.Shutdown(sctx)
		cancel()
		return exitStart
	}
	log.Info("gatewayd started", "version", versionString(), "gateway_id", cfg.GatewayID, "data_dir", cfg.DataDir, "config", file.Name)
	// systemd (Type=notify): ready only now, with everything above up.
	parts.attach(devices, bridges)
	status := func() string { return statusLine(srv, parts.statusParts()...) }
	sdNotify(log, "READY=1\nSTATUS="+status())
	go runWatchdog(ctx, log, newHealthProbe(srv, store).check, status)
	trimCtx, stopTrim := context.WithCancel(ctx)
	trimDone := make(chan struct{})
	go func() { defer close(trimDone); runMemoryTrim(trimCtx, srv) }()
	defer func() { stopTrim(); <-trimDone }()

	applied := cfg // the configuration the devices and bridges run with
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-hup:
			sdReloading(log)
			if next, ok := reload(log, &level, srv, *configPath, *logLevel, *logFormat, cfg); ok {
				applyComponents(ctx, log, srv, &applied, next, &devices, &bridges, &parts)
			}
			sdNotify(log, "READY=1\nSTATUS="+status())
		}
	}
	stop() // a second signal ends the process at once
	sdNotify(log, "STOPPING=1\nSTATUS=shutting down")
	log.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	devices.stop(sctx) // outputs to their safe state, devices offline, before the broker goes
	stopBridges(sctx, bridges, log)
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown did not complete", "err", err)
		return exitStart
	}
	log.Info("stopped")
	return exitOK
}

// reload re-reads the configuration (on SIGHUP) and applies what can change
// while running: the broker's password file, ACL file and listeners (see
// reloadBroker), and the log level. A configuration with errors, or a
// listener address that cannot be bound, changes nothing.
func reload(log *slog.Logger, level *slog.LevelVar, srv *broker.Server, path, logLevel, logFormat string, running Config) (Config, bool) {
	var file *config.File
	var err error
	if path != "" {
		file, err = config.ReadFile(path)
	} else {
		file, err = config.Parse(defaultName, defaultYAML)
	}
	cfg := DefaultConfig()
	if err == nil {
		err = file.Decode(&cfg)
	}
	if err == nil {
		err = applyLogFlags(&cfg.Log, logLevel, logFormat)
	}
	if err == nil {
		err = reloadBroker(log, srv, file, cfg.Broker, path == "")
	}
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			log.Error("configuration not reloaded", "problem", line)
		}
		return Config{}, false
	}
	l, _ := parseLevel(cfg.Log.Level)
	level.Set(l)
	if keys := restartOnly(running, cfg); len(keys) > 0 {
		log.Warn("changes that take effect at the next restart", "keys", strings.Join(keys, ", "))
	}
	log.Info("configuration reloaded", "config", file.Name)
	return cfg, true
}

// restartOnly names the sections of next that differ from running in what
// reload cannot apply.
func restartOnly(running, next Config) []string {
	var keys []string
	if running.GatewayID != next.GatewayID {
		keys = append(keys, "gateway_id")
	}
	if running.DataDir != next.DataDir {
		keys = append(keys, "data_dir")
	}
	if running.Store != next.Store {
		keys = append(keys, "store")
	}
	if running.Log.Format != next.Log.Format {
		keys = append(keys, "log.format")
	}
	if running.Metrics != next.Metrics {
		keys = append(keys, "metrics")
	}
	if !reflect.DeepEqual(withoutReloadable(running.Broker), withoutReloadable(next.Broker)) {
		keys = append(keys, "broker")
	}
	return keys
}

// withoutReloadable is c without what broker.Server.Reload applies.
func withoutReloadable(c broker.Config) broker.Config {
	c.PasswordFile, c.ACLFile, c.Listeners = "", "", nil
	return c
}

// applyLogFlags puts the --log-level and --log-format values, when given, in
// place of the file's.
func applyLogFlags(c *LogConfig, level, format string) error {
	var errs []error
	if level != "" {
		if _, ok := parseLevel(level); !ok {
			errs = append(errs, fmt.Errorf("--log-level %q is not one of debug, info, warn, error", level))
		}
		c.Level = level
	}
	if format != "" {
		if format != "text" && format != "json" {
			errs = append(errs, fmt.Errorf("--log-format %q is not one of text, json", format))
		}
		c.Format = format
	}
	return errors.Join(errs...)
}

func listenerName(c broker.Config, i int) string {
	if len(c.Listeners) == 0 {
		return "default"
	}
	if i < len(c.Listeners) {
		if c.Listeners[i].Name != "" {
			return c.Listeners[i].Name
		}
		return c.Listeners[i].Address
	}
	return "#" + fmt.Sprint(i)
}

// listenHint says where the address that could not be bound is set.
func listenHint(file *config.File, c broker.Config, err error, builtin bool) string {
	key, addr := "broker.listeners", broker.DefaultAddress
	for i, l := range c.Listeners {
		k := fmt.Sprintf("broker.listeners[%d].address", i)
		if strings.Contains(err.Error(), k) || strings.Contains(err.Error(), l.Address) {
			key, addr = k, l.Address
			break
		}
	}
	if builtin {
		return fmt.Sprintf("the built-in configuration listens on %s: stop what uses that address, or run gatewayd --config FILE with another %s", addr, key)
	}
	want := "a free address"
	if !errors.Is(err, syscall.EADDRINUSE) {
		want = "an address of this host that gatewayd may use"
	}
	if line := file.Line(key); line > 0 {
		return fmt.Sprintf("%s:%d: change %s (%s) to %s", file.Name, line, key, addr, want)
	}
	return fmt.Sprintf("%s: set %s to %s", file.Name, key, want)
}

// printErr prints err to w, "gatewayd: " before each line.
func printErr(w io.Writer, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(w, "gatewayd: "+line)
	}
}

// startBridges starts the configured bridges on the running broker.
func startBridges(ctx context.Context, cfg Config, srv *broker.Server, log *slog.Logger) ([]*bridge.Bridge, error) {
	endRemovedBridges(cfg, srv, log)
	var out []*bridge.Bridge
	for _, bc := range cfg.Bridges {
		b, err := bridge.New(bc, bridge.Options{GatewayID: cfg.GatewayID, Broker: srv, Logger: log, SysInterval: cfg.Broker.SysInterval})
		if err == nil {
			err = b.Start(ctx)
		}
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			stopBridges(sctx, out, log)
			cancel()
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// endRemovedBridges ends the local sessions, and the queues, of bridges no
// longer configured.
func endRemovedBridges(cfg Config, srv *broker.Server, log *slog.Logger) {
	var names []string
	for _, bc := range cfg.Bridges {
		names = append(names, bc.Name)
	}
	for _, r := range bridge.EndRemoved(srv, names) {
		log.Info("bridge removed from the configuration: its queue is dropped", "bridge", r.Name, "messages", r.Messages)
	}
}

// stopBridges stops the bridges (before the broker): what they have not
// delivered stays queued in the broker's store.
func stopBridges(ctx context.Context, bs []*bridge.Bridge, log *slog.Logger) {
	for _, b := range bs {
		if err := b.Stop(ctx); err != nil {
			log.Error("bridge did not stop in time", "bridge", b.Name(), "err", err)
		}
	}
}
