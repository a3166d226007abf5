package broker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"gatewayd/broker/packet"
	"gatewayd/internal/testpki"
)

// startListeners starts a broker with the given listeners and returns it
// with the configuration it runs, to change and hand to Reload.
func startListeners(t *testing.T, lcs ...ListenerConfig) (*Server, Config) {
	t.Helper()
	s, _ := startServer(t, func(c *Config) { c.Listeners = lcs }, Options{})
	return s, s.cfg
}

// listenerAddr is the bound address of the listener named name.
func listenerAddr(t *testing.T, s *Server, name string) string {
	t.Helper()
	for _, l := range s.Listeners() {
		if l.Name == name {
			return l.Addr.String()
		}
	}
	t.Fatalf("no listener %s in %+v", name, s.Listeners())
	return ""
}

func withListeners(cfg Config, lcs ...ListenerConfig) Config {
	cfg.Listeners = lcs
	return cfg
}

// serverDisconnect reads until the broker closes the connection and returns
// the reason of the DISCONNECT it sent first, failing if there was none.
func serverDisconnect(t *testing.T, r *rawClient) packet.ReasonCode {
	t.Helper()
	var seen []packet.Type
	for {
		p, err := r.read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open after %v (saw %v)", wait, seen)
			}
			t.Fatalf("connection closed without DISCONNECT (saw %v): %v", seen, err)
		}
		if d, ok := p.(*packet.Disconnect); ok {
			reason := d.Reason
			if _, err := r.read(); err == nil {
				t.Fatalf("a packet after DISCONNECT")
			}
			return reason
		}
		seen = append(seen, p.Type())
	}
}

// refused reports whether nothing accepts TCP connections on addr.
func refused(addr string) bool {
	nc, err := net.DialTimeout("tcp", addr, wait)
	if err == nil {
		nc.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// A listener added by Reload accepts clients at once, which reach the
// clients of the listener that was there before; that one keeps its socket.
func TestReloadOpensAnAddedListener(t *testing.T) {
	s, cfg := startListeners(t, ListenerConfig{Name: "a", Address: "127.0.0.1:0"})
	before := s.Listeners()
	sub := dialRaw(t, before[0].Addr.String(), packet.V5)
	sub.mustConnect("sub", true)
	sub.subscribe(1, "t/#", 1)

	if err := s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "b", Address: "127.0.0.1:0"})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	after := s.Listeners()
	if len(after) != 2 || after[0] != before[0] || after[1].Name != "b" || len(s.Addrs()) != 2 {
		t.Fatalf("listeners after adding b: %+v (before %+v), Addrs %v", after, before, s.Addrs())
	}
	pub, _ := v3(t, listenerAddr(t, s, "b"), "pub-on-b", 4, true)
	v3pub(t, pub, "t/x", 1, false, "through b")
	if m := sub.nextPublish(); string(m.Payload) != "through b" {
		t.Fatalf("subscriber on a received %q", m.Payload)
	}
	ping(t, sub)
}

// A listener removed by Reload stops accepting and disconnects its clients:
// a v5 client gets DISCONNECT 0x8B, its will is published and its session
// kept. Clients of the unchanged listener stay connected, and a stream of
// QoS 1 messages published on it while the reload runs arrives whole and in
// order.
func TestReloadClosesARemovedListener(t *testing.T) {
	s, cfg := startListeners(t, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "b", Address: "127.0.0.1:0"})
	addrA, addrB := listenerAddr(t, s, "a"), listenerAddr(t, s, "b")

	onB, ack := connectRaw(t, addrB, packet.V5, rawConnect{id: "on-b", expiry: 300, will: "wills/on-b", willPayload: "gone", willQoS: 1}, "")
	if ack.Reason != packet.Success {
		t.Fatalf("CONNACK on b: %#x", ack.Reason)
	}
	onB.subscribe(1, "kept/#", 1)
	onB311 := dialRaw(t, addrB, packet.V311)
	onB311.mustConnect("on-b-311", true)

	sub, got := v3(t, addrA, "sub-on-a", 4, true)
	v3sub(t, sub, "wills/#", 1)
	v3sub(t, sub, "stream/#", 1)
	pub, _ := v3(t, addrA, "pub-on-a", 4, true)

	const n = 200
	published := make(chan error, 1)
	go func() {
		for i := range n {
			tok := pub.Publish("stream/x", 1, false, fmt.Sprint(i))
			if !tok.WaitTimeout(wait) || tok.Error() != nil {
				published <- fmt.Errorf("publish %d: %v", i, tok.Error())
				return
			}
		}
		published <- nil
	}()
	waitFor(t, "the stream to start", func() bool { return len(got.all()) > 0 })
	if err := s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}

	if r := serverDisconnect(t, onB); r != packet.ServerShuttingDown {
		t.Fatalf("v5 client on b: DISCONNECT %#x, want 0x8B", r)
	}
	if seen := onB311.closed(); len(seen) != 0 {
		t.Fatalf("3.1.1 client on b got %v before the close", seen)
	}
	if !refused(addrB) {
		t.Fatalf("%s still accepts connections", addrB)
	}
	if l := s.Listeners(); len(l) != 1 || l[0].Name != "a" || len(s.Addrs()) != 1 {
		t.Fatalf("listeners after removing b: %+v", l)
	}

	msgs := got.waitN(t, n+1)
	var stream []string
	will := 0
	for _, m := range msgs {
		switch m.Topic {
		case "stream/x":
			stream = append(stream, m.Payload)
		case "wills/on-b":
			if m.Payload == "gone" {
				will++
			}
		}
	}
	if will != 1 {
		t.Errorf("will of the client on b published %d times, want once", will)
	}
	if len(stream) != n {
		t.Fatalf("subscriber on a got %d of %d messages", len(stream), n)
	}
	for i, p := range stream {
		if p != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: out of order or lost", i, p)
		}
	}
	if !sub.IsConnectionOpen() || !pub.IsConnectionOpen() {
		t.Fatalf("a client of listener a lost its connection")
	}

	// The session of the client on b was kept: it resumes on a, with its
	// subscription.
	back, ack := connectRaw(t, addrA, packet.V5, rawConnect{id: "on-b", expiry: 300}, "")
	if ack.Reason != packet.Success || !ack.SessionPresent {
		t.Fatalf("reconnect on a: CONNACK %#x, session present %v", ack.Reason, ack.SessionPresent)
	}
	v3pub(t, pub, "kept/y", 1, false, "still subscribed")
	if m := back.nextPublish(); string(m.Payload) != "still subscribed" {
		t.Fatalf("resumed session received %q", m.Payload)
	}
}

// A listener whose address changes is closed and opened on the new address:
// its clients are disconnected (0x8B), the old port refuses connections and
// the new one accepts them.
func TestReloadMovesAListenerToANewPort(t *testing.T) {
	s, cfg := startListeners(t, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "m", Address: "127.0.0.1:0"})
	oldAddr := listenerAddr(t, s, "m")
	stay := dialRaw(t, listenerAddr(t, s, "a"), packet.V5)
	stay.mustConnect("stay", true)
	moved := dialRaw(t, oldAddr, packet.V5)
	moved.mustConnect("moved", true)

	newAddr := freeAddr(t)
	if err := s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "m", Address: newAddr})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if r := serverDisconnect(t, moved); r != packet.ServerShuttingDown {
		t.Fatalf("client of the moved listener: DISCONNECT %#x, want 0x8B", r)
	}
	if got := listenerAddr(t, s, "m"); got != newAddr {
		t.Fatalf("listener m on %s, want %s", got, newAddr)
	}
	if !refused(oldAddr) {
		t.Fatalf("old address %s still accepts connections", oldAddr)
	}
	r := dialRaw(t, newAddr, packet.V311)
	r.mustConnect("on-new-port", true)
	ping(t, stay)
}

// freeAddr is a loopback address with a port free at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A listener that turns from MQTT into WebSocket on the same port is
// closed before the new one takes the port; clients get the new protocol
// there, and a TLS listener turned plain likewise.
func TestReloadChangesTypeOnTheSamePort(t *testing.T) {
	p := testpki.New(t, "", "gatewayd test CA")
	cert, key, _ := p.Localhost("server")
	s, cfg := startListeners(t, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "x", Address: "127.0.0.1:0", TLS: &TLSConfig{CertFile: cert, KeyFile: key}})
	addr := listenerAddr(t, s, "x")
	c, _ := dialTLS(t, p, addr, packet.V5, "", "")
	c.mustConnect("tls", true)

	if err := s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "x", Address: addr, Type: "ws", Path: "/mqtt"})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if r := serverDisconnect(t, c); r != packet.ServerShuttingDown {
		t.Fatalf("TLS client: DISCONNECT %#x, want 0x8B", r)
	}
	ws := wsClient(t, "ws://"+addr+"/mqtt", nil, packet.V5)
	ws.mustConnect("ws", true)
	if l := s.Listeners(); len(l) != 2 || l[1].Kind != "ws" || l[1].Addr.String() != addr {
		t.Fatalf("listeners: %+v", l)
	}

	// And back to plain MQTT, same port: the ws client is disconnected.
	if err := s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "x", Address: addr})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if r := serverDisconnect(t, ws); r != packet.ServerShuttingDown {
		t.Fatalf("ws client: DISCONNECT %#x, want 0x8B", r)
	}
	dialRaw(t, addr, packet.V311).mustConnect("plain", true)
}

// An address that cannot be bound fails the whole reload with an error
// naming the listener and the key to change; the listeners and clients
// there were run on, the password file is not swapped either, and a later
// good reload works.
func TestReloadBindFailureKeepsTheRunningListeners(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	s, cfg := startListeners(t, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "b", Address: "127.0.0.1:0"})
	before := s.Listeners()
	onA := dialRaw(t, listenerAddr(t, s, "a"), packet.V5)
	onA.mustConnect("on-a", true)
	onB := dialRaw(t, listenerAddr(t, s, "b"), packet.V5)
	onB.mustConnect("on-b", true)

	// b removed, c added on a busy port.
	err = s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "c", Address: busy.Addr().String()}))
	if err == nil {
		t.Fatalf("Reload onto a busy port succeeded")
	}
	for _, want := range []string{"listener c", busy.Addr().String(), "broker.listeners[1].address", "address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if after := s.Listeners(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("listeners changed by a failed reload: %+v, was %+v", after, before)
	}
	ping(t, onA)
	ping(t, onB)
	dialRaw(t, listenerAddr(t, s, "b"), packet.V311).mustConnect("new-on-b", true)

	if err := s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"})); err != nil {
		t.Fatalf("Reload after the failed one: %v", err)
	}
	if r := serverDisconnect(t, onB); r != packet.ServerShuttingDown {
		t.Fatalf("client on b: DISCONNECT %#x, want 0x8B", r)
	}
	ping(t, onA)
}

// When the new listener wants the port of the one it replaces, the old
// socket is closed first; if the new one cannot be bound even then, the old
// one is opened again on its address, and its clients never noticed.
func TestReloadBindFailureOnAReplacedPortReopensTheOldOne(t *testing.T) {
	s, cfg := startListeners(t, ListenerConfig{Name: "x", Address: "127.0.0.1:0"})
	addr := listenerAddr(t, s, "x")
	_, port, _ := net.SplitHostPort(addr)
	// Another program holds the same port on another loopback address.
	busy, err := net.Listen("tcp", "127.0.0.2:"+port)
	if err != nil {
		t.Skipf("127.0.0.2 cannot be bound here: %v", err)
	}
	defer busy.Close()
	c := dialRaw(t, addr, packet.V5)
	c.mustConnect("stays", true)

	err = s.Reload(withListeners(cfg, ListenerConfig{Name: "x", Address: busy.Addr().String()}))
	if err == nil || !strings.Contains(err.Error(), "listener x") {
		t.Fatalf("Reload onto a busy port: %v, want an error naming listener x", err)
	}
	if got := listenerAddr(t, s, "x"); got != addr {
		t.Fatalf("listener x on %s after the failed reload, want %s", got, addr)
	}
	ping(t, c)
	dialRaw(t, addr, packet.V311).mustConnect("after", true)
}

// Settings a listener can take in place (max_connections, allow_anonymous)
// apply to the connections that follow; its clients stay connected.
func TestReloadChangesListenerSettingsInPlace(t *testing.T) {
	s, cfg := startListeners(t, ListenerConfig{Name: "a", Address: "127.0.0.1:0"})
	before := s.Listeners()
	addr := before[0].Addr.String()
	first := dialRaw(t, addr, packet.V5)
	first.mustConnect("first", true)

	if err := s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0", MaxConnections: 1})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if after := s.Listeners(); after[0] != before[0] {
		t.Fatalf("listener reopened for a max_connections change: %+v, was %+v", after, before)
	}
	if _, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "second", clean: true}, ""); ack.Reason != packet.QuotaExceeded {
		t.Fatalf("second connection with max_connections 1: CONNACK %#x, want 0x97", ack.Reason)
	}
	ping(t, first)

	if err := s.Reload(withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0", AllowAnonymous: boolp(false)})); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if _, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "anon", clean: true}, ""); ack.Reason != packet.NotAuthorized {
		t.Fatalf("anonymous client after allow_anonymous: false: CONNACK %#x, want 0x87", ack.Reason)
	}
	ping(t, first)
	if after := s.Listeners(); after[0] != before[0] {
		t.Fatalf("listener reopened for an allow_anonymous change: %+v", after)
	}
}

// Reloads that add and remove listeners while clients connect through the
// sockets and ServeConn, and Addrs and Listeners are read, then Shutdown:
// race-free, every listener that exists at Shutdown is closed, and no
// goroutine is left behind.
func TestReloadConcurrentWithClientsAndShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	cfg := DefaultConfig()
	cfg.SysInterval = 0
	cfg.Listeners = []ListenerConfig{{Name: "a", Address: "127.0.0.1:0"}}
	s, err := New(cfg, Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			shutdown(t, s)
		}
	}()

	done := make(chan struct{})
	var wg sync.WaitGroup
	var acked, piped atomic.Int64 // CONNACKs through sockets, pipes served by listener b
	// Clients dialling whatever listeners there are.
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				for _, a := range s.Addrs() {
					nc, err := net.DialTimeout("tcp", a.String(), wait)
					if err != nil {
						continue // closed by a reload in between
					}
					b, _ := packet.Append(nil, &packet.Connect{Version: packet.V311, ProtocolName: []byte("MQTT"),
						ClientID: []byte(fmt.Sprintf("w%d-%d", w, i)), CleanStart: true, KeepAlive: 30}, packet.V311)
					nc.SetDeadline(time.Now().Add(wait))
					nc.Write(b)
					buf := make([]byte, 4)
					if n, _ := io.ReadFull(nc, buf); n == 4 && buf[0] == 0x20 {
						acked.Add(1)
					}
					nc.Close()
				}
			}
		}()
	}
	// In-process clients through ServeConn on a listener that comes and
	// goes.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			client, server := net.Pipe()
			served := make(chan struct{})
			go func() {
				s.ServeConn(server, "b")
				close(served)
			}()
			b, _ := packet.Append(nil, &packet.Connect{Version: packet.V311, ProtocolName: []byte("MQTT"),
				ClientID: []byte(fmt.Sprintf("pipe-%d", i)), CleanStart: true, KeepAlive: 30}, packet.V311)
			client.SetDeadline(time.Now().Add(wait))
			client.Write(b)
			buf := make([]byte, 4)
			if n, _ := io.ReadFull(client, buf); n == 4 && buf[0] == 0x20 {
				piped.Add(1)
			}
			client.Close()
			<-served
		}
	}()

	withB := withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"}, ListenerConfig{Name: "b", Address: "127.0.0.1:0"},
		ListenerConfig{Name: "w", Address: "127.0.0.1:0", Type: "ws"})
	withC := withListeners(cfg, ListenerConfig{Name: "a", Address: "127.0.0.1:0"}, ListenerConfig{Name: "c", Address: "127.0.0.1:0"})
	// Reload until clients got through many times during the changes.
	reloads := 0
	for ; reloads < 20 || acked.Load() < 100 || piped.Load() < 20; reloads++ {
		if reloads == 5000 {
			t.Fatalf("after %d reloads only %d CONNACKs through sockets and %d through ServeConn", reloads, acked.Load(), piped.Load())
		}
		next := withB
		if reloads%2 == 1 {
			next = withC
		}
		if err := s.Reload(next); err != nil {
			t.Fatalf("Reload %d: %v", reloads, err)
		}
		if l := s.Listeners(); len(l) != len(next.Listeners) {
			t.Fatalf("Reload %d: listeners %+v", reloads, l)
		}
	}
	if err := s.Reload(withB); err != nil {
		t.Fatal(err)
	}
	close(done)
	wg.Wait()
	t.Logf("%d reloads; %d CONNACKs through sockets, %d through ServeConn", reloads, acked.Load(), piped.Load())
	addrs := s.Addrs()
	if len(addrs) != 3 {
		t.Fatalf("Addrs after the last reload: %v", addrs)
	}
	stopped = true
	shutdown(t, s)
	for _, a := range addrs {
		if !refused(a.String()) {
			t.Errorf("%s still accepts connections after Shutdown", a)
		}
	}
	if err := s.Reload(withC); err == nil {
		t.Errorf("Reload after Shutdown succeeded")
	}
}
