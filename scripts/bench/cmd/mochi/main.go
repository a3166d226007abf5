// Command mochi runs github.com/mochi-mqtt/server/v2 as a peer broker for the
// side-by-side benchmarks, with its queue and in-flight limits raised so that
// it does not drop messages under the benchmark's load where it can avoid it.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address")
	pending := flag.Int("writes-pending", 1<<16, "MaximumClientWritesPending: outbound queue slots per client")
	flag.Parse()

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = int32(*pending)
	caps.MaximumInflight = 65535
	caps.ReceiveMaximum = 65535
	caps.MaximumMessageExpiryInterval = 0
	s := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		SysTopicResendInterval: 3600,
		Logger:                 slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		fatal(err)
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *addr})); err != nil {
		fatal(err)
	}
	// Serve starts the listeners and returns.
	if err := s.Serve(); err != nil {
		fatal(err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	_ = s.Close()
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "mochi:", err)
	os.Exit(1)
}
