// Command forwarder runs the benchmark's zero-logic forwarder (package
// forward) on a TCP address: the ceiling the brokers are measured against.
// By default it is goroutine-per-connection (forward.Serve); with -epoll it is
// one epoll loop (forward.Epoll), which prints its counters to
// stderr when it is stopped with SIGINT or SIGTERM.
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
	epoll := flag.Bool("epoll", false, "one epoll loop on one thread instead of goroutines per connection (Linux only)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(1)
	}
	var ep forward.Epoll
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		if *epoll {
			fmt.Fprintln(os.Stderr, "forwarder:", ep.Stats())
		}
		os.Exit(0)
	}()
	if *epoll {
		err = ep.Serve(ln)
	} else {
		err = forward.Serve(ln)
	}
	fmt.Fprintln(os.Stderr, "forwarder:", err)
	os.Exit(1)
}
