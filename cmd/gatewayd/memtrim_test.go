package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"gatewayd/broker"
	"gatewayd/internal/testbroker"
)

// TestTrimmerTrimsOnceAfterEachBurstAndNeverDuringTraffic feeds the trimmer
// the counters a broker would show over a run: start-up, a wave of clients,
// a long message flow, idle clients pinging.
func TestTrimmerTrimsOnceAfterEachBurstAndNeverDuringTraffic(t *testing.T) {
	var tr trimmer
	var st broker.Stats
	trims := 0
	tick := func(bytes, connects uint64) bool {
		st.BytesReceived += bytes
		st.MessagesReceived += bytes / 50
		st.Connects += connects
		trim := tr.observe(st)
		if trim {
			trims++
		}
		return trim
	}
	// Start-up, then quiet: one trim after quietTicks quiet ticks.
	for i := range quietTicks + 3 {
		if got, want := tick(0, 0), i == quietTicks; got != want {
			t.Fatalf("start-up tick %d: trim %v, want %v", i, got, want)
		}
	}
	// 1000 clients connect over ten ticks: no trim while they come.
	for i := range 10 {
		if tick(4000, 100) {
			t.Fatalf("trimmed while clients connected (tick %d)", i)
		}
	}
	// Then they stay idle, pinging: one trim, then no more.
	for i := range 20 {
		if got, want := tick(2000, 0), i == quietTicks-1; got != want {
			t.Fatalf("idle tick %d: trim %v, want %v", i, got, want)
		}
	}
	// A message flow: never during it, once after it.
	for i := range 50 {
		if tick(8<<20, 0) {
			t.Fatalf("trimmed during traffic (tick %d)", i)
		}
	}
	for i := range 10 {
		if got, want := tick(0, 0), i == quietTicks-1; got != want {
			t.Fatalf("after traffic tick %d: trim %v, want %v", i, got, want)
		}
	}
	// A few clients reconnecting now and then are no burst (they send
	// fewer than burstPackets in all).
	for i := range 40 {
		c := uint64(0)
		if i%5 == 0 {
			c = 1
		}
		if tick(100, c) {
			t.Fatalf("trimmed for a trickle of reconnects (tick %d)", i)
		}
	}
	if trims != 3 {
		t.Fatalf("%d trims, want 3", trims)
	}
}

// TestTrimmerCountsClientsThatLeave: clients leaving free memory too, and
// clients that come and go between two ticks are churn all the same; after
// either, and after a wave that follows a wave of departures, the trimmer
// trims once things are quiet.
func TestTrimmerCountsClientsThatLeave(t *testing.T) {
	var tr trimmer
	var st broker.Stats
	trims := 0
	tick := func(connects, disconnects uint64) {
		st.Connects += connects
		st.Disconnects += disconnects
		st.ClientsConnected += int64(connects) - int64(disconnects)
		st.ClientsTotal = st.ClientsConnected
		if tr.observe(st) {
			trims++
		}
	}
	quiet := func(phase string, want int) {
		t.Helper()
		for range quietTicks + 2 {
			tick(0, 0)
		}
		if trims != want {
			t.Fatalf("after %s: %d trims, want %d", phase, trims, want)
		}
	}
	quiet("start-up", 1)
	for range 10 {
		tick(100, 0)
	}
	quiet("1000 clients connecting", 2)
	for range 10 {
		tick(0, 100)
	}
	quiet("the same 1000 leaving", 3)
	for range 10 {
		tick(100, 0)
	}
	quiet("1000 clients connecting again", 4)
	for range 5 {
		tick(100, 100) // each tick, 100 come and 100 others go
	}
	quiet("500 connecting and 500 leaving at the same pace", 5)
}

// TestMemoryTrimFollowsAWaveOfClients runs the trimmer on a real broker:
// clients connecting in a wave and then staying idle are followed by a trim.
func TestMemoryTrimFollowsAWaveOfClients(t *testing.T) {
	srv := testbroker.Start(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); runMemoryTrim(ctx, srv) }()
	defer func() { cancel(); <-done }()

	// The start-up trim first.
	waitUntil(t, "start-up trim", func() bool { return memoryTrims.Load() >= 1 })
	before := memoryTrims.Load()
	addr := srv.Addrs()[0].String()
	for i := range burstClients + 10 {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		id := fmt.Sprintf("trim-%03d", i)
		connect := append([]byte{0x10, byte(12 + len(id)), 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, 0, byte(len(id))}, id...)
		if _, err := nc.Write(connect); err != nil {
			t.Fatal(err)
		}
		nc.SetReadDeadline(time.Now().Add(hangGuard))
		connack := make([]byte, 4)
		if _, err := io.ReadFull(nc, connack); err != nil || connack[0] != 0x20 || connack[3] != 0 {
			t.Fatalf("CONNACK %x: %v", connack, err)
		}
	}
	if n := srv.Stats().ClientsConnected; n != burstClients+10 {
		t.Fatalf("%d clients connected", n)
	}
	waitUntil(t, "a trim after the wave", func() bool { return memoryTrims.Load() > before })
}
