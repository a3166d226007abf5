// Command forwarder runs the benchmark's zero-logic forwarder (package
// forward) on a TCP address: the ceiling the brokers are measured against.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"gatewayd/scripts/bench/internal/forward"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:1883", "TCP listen address")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()
	if err := forward.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
}
