package main

import (
	"context"
	"runtime/debug"
	"sync/atomic"
	"time"

	"gatewayd/broker"
)

// Returning memory once the broker goes quiet. The Go runtime keeps memory
// it has freed (garbage, the stacks of goroutines that ended) for reuse and
// hands it back to the system only slowly, so after a burst — start-up, a
// wave of clients connecting, a flood of messages — the process stays larger
// than what it holds. When a burst is followed by a quiet spell, the trimmer
// collects and returns the free memory once (debug.FreeOSMemory). It does
// nothing while traffic flows, so it costs message throughput nothing.
const (
	trimTick = 250 * time.Millisecond
	// A tick is quiet when fewer than quietBytes and quietPackets were
	// received and sent and no client connected or disconnected; 10 000
	// idle clients pinging every minute stay below that.
	quietBytes   = 32 << 10
	quietPackets = 512
	// A burst: since the last trim, at least burstClients clients came or
	// went, burstPackets packets or burstBytes bytes were received and sent.
	burstClients = 64
	burstPackets = 256
	burstBytes   = 4 << 20
	// quietTicks quiet ticks in a row end a burst: longer than the broker's
	// idle reader hand-off, so the stacks it frees are collected too.
	quietTicks = 2
)

// trimmer decides when to return memory; observe is fed one sample per tick.
type trimmer struct {
	started      bool
	bytes        uint64 // received + sent at the last tick
	packets      uint64 // received + sent at the last tick
	clients      uint64 // connects + disconnects at the last tick
	burstBytes   uint64 // since the last trim
	burstPackets uint64
	burstClients uint64
	quiet        int // quiet ticks in a row
}

// observe takes the broker's counters at a tick and reports whether to trim
// now. The first trim follows start-up, once the broker is quiet.
func (t *trimmer) observe(st broker.Stats) bool {
	bytes := st.BytesReceived + st.BytesSent
	packets := st.MessagesReceived + st.MessagesSent
	clients := st.Connects + st.Disconnects
	if !t.started {
		t.started = true
		t.bytes, t.packets, t.clients = bytes, packets, clients
		t.burstClients = burstClients // start-up is a burst
		return false
	}
	db, dp, dc := bytes-t.bytes, packets-t.packets, clients-t.clients
	t.bytes, t.packets, t.clients = bytes, packets, clients
	if db < quietBytes && dp < quietPackets && dc == 0 {
		t.quiet++
	} else {
		// Only busy ticks add up to a burst: idle clients' pings do not.
		t.quiet = 0
		t.burstBytes += db
		t.burstPackets += dp
		t.burstClients += dc
	}
	if t.quiet >= quietTicks && (t.burstBytes >= burstBytes || t.burstPackets >= burstPackets || t.burstClients >= burstClients) {
		t.burstBytes, t.burstPackets, t.burstClients = 0, 0, 0
		return true
	}
	return false
}

// memoryTrims counts the trims done, for tests and the debug log.
var memoryTrims atomic.Uint64

// runMemoryTrim trims memory after bursts until ctx ends.
func runMemoryTrim(ctx context.Context, srv *broker.Server) {
	tick := time.NewTicker(trimTick)
	defer tick.Stop()
	var t trimmer
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if t.observe(srv.Stats()) {
				debug.FreeOSMemory()
				memoryTrims.Add(1)
			}
		}
	}
}
