// Package load is the benchmark's load generator: raw MQTT 3.1.1 publishers
// and subscribers over TCP with batched writes, and a verifier that checks
// every delivered message (count, duplicates, order per publisher, payload
// integrity) and records its latency from the send time embedded in it.
//
// It must stay cheap: no allocation per message, one goroutine per connection
// (two for a QoS 1 publisher), writes batched into one syscall. Every loop in
// it is bounded by a count and a deadline.
package load

import (
	"encoding/binary"
	"time"
)

// PayloadSize is the size of every benchmark message.
const PayloadSize = 64

var epoch = time.Now()

// Now is the load generator's clock: monotonic nanoseconds since start.
// Publishers and subscribers share the process, so send and receive times
// compare directly.
func Now() int64 { return int64(time.Since(epoch)) }

// Payload layout: publisher id (4), sequence number (8), send time in ns (8),
// padding derived from the sequence number (36), checksum of the first 56
// bytes (8). Big-endian throughout.
const (
	offPub  = 0
	offSeq  = 4
	offTime = 12
	offPad  = 20
	offSum  = 56
)

// checksum mixes seven 64-bit words; each step is a bijection of the state,
// so any change confined to one word changes the result.
func checksum(p []byte) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < offSum; i += 8 {
		h ^= binary.BigEndian.Uint64(p[i:])
		h *= 1099511628211
		h ^= h >> 29
	}
	return h
}

// FillPayload writes a message into p[:PayloadSize].
func FillPayload(p []byte, pub uint32, seq uint64, sendNs int64) {
	binary.BigEndian.PutUint32(p[offPub:], pub)
	binary.BigEndian.PutUint64(p[offSeq:], seq)
	binary.BigEndian.PutUint64(p[offTime:], uint64(sendNs))
	b := byte(seq)
	for i := offPad; i < offSum; i++ {
		p[i] = b + byte(i)
	}
	binary.BigEndian.PutUint64(p[offSum:], checksum(p))
}

// ParsePayload checks p and returns its header fields; ok is false for a
// payload of the wrong size or with a bad checksum.
func ParsePayload(p []byte) (pub uint32, seq uint64, sendNs int64, ok bool) {
	if len(p) != PayloadSize || binary.BigEndian.Uint64(p[offSum:]) != checksum(p) {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(p[offPub:]), binary.BigEndian.Uint64(p[offSeq:]),
		int64(binary.BigEndian.Uint64(p[offTime:])), true
}
