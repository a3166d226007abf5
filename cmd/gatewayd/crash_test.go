package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"gatewayd/broker/state"
)

var crashKills = flag.Int("crash.kills", 20, "how many times TestGatewaydSurvivesSIGKILL kills gatewayd")

// TestGatewaydSurvivesSIGKILL is the promise of the durable store, end to end:
// QoS 1 and QoS 2 publishers and a persistent-session subscriber run at full
// speed while gatewayd is killed with SIGKILL at random moments and restarted.
// Every message whose PUBACK (QoS 1) or PUBCOMP (QoS 2) a publisher received
// must reach the subscriber at least once (QoS 1) or exactly once (QoS 2), and
// every acknowledged retained message must be there after each restart.
//
// The subscriber speaks the protocol with paho.golang (v5), but what counts as
// delivered is read off the wire by a receiver that keeps the QoS 2 rule of
// MQTT 5.0 section 4.3.3 (Method A) itself: a packet id is held from the
// PUBLISH that delivered it until its PUBREL, and a PUBLISH with a held id is
// acknowledged, never delivered again. (paho.golang records the id only when
// it sends PUBREC, after the application has the message, so a kill in
// between would be counted against gatewayd.) A QoS 2 PUBLISH or PUBREL that
// gatewayd writes before the batch recording it is durable shows up here: the
// restored session reuses a packet id the receiver still holds (a lost
// message) or resends a PUBLISH the receiver has already released (a
// duplicate).
func TestGatewaydSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills gatewayd 20 times")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	conf := filepath.Join(dir, "gatewayd.yaml")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`data_dir: %s
log:
  level: warn
broker:
  listeners:
    - name: crash
      address: %s
  max_queued_messages: 10000000
  max_queued_bytes: 1000000000
`, filepath.Join(dir, "data"), addr)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	gw := start(t, dir, nil, nil, "--config", conf)
	gw.waitListening()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The subscriber outlives the publishers (ctx) to receive what is left.
	sub := newCrashSubscriber(t, context.Background(), addr)

	var pubs sync.WaitGroup
	q1 := &crashPublisher{name: "q1", qos: 1, addr: addr}
	q2 := &crashPublisher{name: "q2", qos: 2, addr: addr}
	ret := &crashPublisher{name: "ret", qos: 1, addr: addr, retain: true}
	for _, p := range []*crashPublisher{q1, q2, ret} {
		pubs.Add(1)
		go func() { defer pubs.Done(); p.run(ctx) }()
	}

	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for kill := range *crashKills {
		// Let some traffic through since the last restart, then kill at a
		// random moment in it.
		before := q1.ackCount() + q2.ackCount()
		want := before + 1 + r.IntN(400)
		waitUntil(t, "publishers acknowledged after a restart", func() bool { return q1.ackCount()+q2.ackCount() >= want })
		time.Sleep(time.Duration(r.IntN(50)) * time.Millisecond)
		gw.signal(syscall.SIGKILL)
		retained := ret.lastAcked() // acknowledged before the kill
		gw.exitCode()
		gw = start(t, dir, nil, nil, "--config", conf)
		gw.waitListening()
		if strings.Contains(gw.stderr.String(), "damaged") {
			t.Fatalf("kill %d: the store was found damaged after SIGKILL:\n%s", kill, gw.stderr.String())
		}
		checkRetained(t, addr, kill, retained)
	}

	cancel()
	pubs.Wait()
	acked1, acked2 := q1.acked(), q2.acked()
	deadline := time.Now().Add(hangGuard)
	for !(sub.hasAll("q1", acked1) && sub.hasAll("q2", acked2)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	sub.stop()
	gw.signal(syscall.SIGTERM)
	if code := gw.exitCode(); code != 0 {
		t.Errorf("gatewayd exited with %d after SIGTERM; stderr:\n%s", code, gw.stderr.String())
	}

	if m1 := sub.missing("q1", acked1); len(m1) > 0 {
		t.Errorf("QoS 1: %d of %d acknowledged messages never delivered: %v\n%s", len(m1), len(acked1), head(m1),
			storedQueue(filepath.Join(dir, "data", "store"), "crash-sub"))
	}
	if m2 := sub.missing("q2", acked2); len(m2) > 0 {
		t.Errorf("QoS 2: %d of %d acknowledged messages never delivered: %v\n%s", len(m2), len(acked2), head(m2),
			strings.Join(sub.traces(m2), "\n"))
	}
	got1, got2 := sub.counts("q1"), sub.counts("q2")
	var twice []int
	for n, c := range got2 {
		if c > 1 {
			twice = append(twice, n)
		}
	}
	slices.Sort(twice)
	if len(twice) > 0 {
		t.Errorf("QoS 2: messages delivered more than once: %v\n%s", head(twice), strings.Join(sub.traces(twice), "\n"))
	}
	if sub.sessionLost > 0 {
		t.Errorf("the subscriber's session was not present after %d of %d restarts", sub.sessionLost, *crashKills)
	}
	dups := 0
	for _, c := range got1 {
		dups += c - 1
	}
	t.Logf("%d kills; acknowledged QoS 1: %d (received %d, %d duplicates), QoS 2: %d (received %d), retained: %d",
		*crashKills, len(acked1), len(got1), dups, len(acked2), len(got2), ret.ackCount())
}

// waitUntil polls cond; hangGuard only keeps a broken build from hanging.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// crashPublisher publishes "<name> <n>" with increasing n from 4 goroutines
// on one paho.mqtt.golang connection, and reconnects with a new client after
// gatewayd is killed. A message counts as acknowledged when its token
// completes without error (PUBACK for QoS 1, PUBCOMP for QoS 2).
type crashPublisher struct {
	name   string
	qos    byte
	retain bool
	addr   string

	mu     sync.Mutex
	next   int
	ok     []int
	latest map[string]int // retained: topic -> last acknowledged n
}

func (p *crashPublisher) run(ctx context.Context) {
	workers := 4
	if p.retain {
		workers = 1 // in order, so that the last acknowledged is the latest
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		opts := mqtt.NewClientOptions().AddBroker("tcp://" + p.addr).
			SetClientID(fmt.Sprintf("crash-%s-%d", p.name, attempt)).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second)
		c := mqtt.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			c.Disconnect(0)
			time.Sleep(20 * time.Millisecond)
			continue
		}
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && c.IsConnectionOpen() {
					p.mu.Lock()
					p.next++
					n := p.next
					p.mu.Unlock()
					topic := "crash/" + p.name
					if p.retain {
						topic = fmt.Sprintf("crash/ret/%d", n%8)
					}
					tok := c.Publish(topic, p.qos, p.retain, fmt.Sprintf("%s %d", p.name, n))
					if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
						return
					}
					p.mu.Lock()
					p.ok = append(p.ok, n)
					if p.retain {
						if p.latest == nil {
							p.latest = map[string]int{}
						}
						p.latest[topic] = n
					}
					p.mu.Unlock()
				}
			}()
		}
		wg.Wait()
		c.Disconnect(0)
	}
}

func (p *crashPublisher) ackCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ok)
}

func (p *crashPublisher) acked() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ok)
}

func (p *crashPublisher) lastAcked() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := map[string]int{}
	for k, v := range p.latest {
		m[k] = v
	}
	return m
}

// crashSubscriber is a persistent v5 session subscribed once, at its first
// connection, to crash/q1 (QoS 1) and crash/q2 (QoS 2): after each restart
// the subscription and the queue must come back from the store.
type crashSubscriber struct {
	cm          *autopaho.ConnectionManager
	mu          sync.Mutex
	got         map[string]map[int]int // publisher -> n -> deliveries
	held        map[uint16]int         // QoS 2 packet id -> n delivered with it, not yet released
	trace       map[int][]string       // QoS 2 n -> what came on the wire for it
	pidLog      map[uint16][]string    // QoS 2 packet id -> what came on the wire with it
	conns       int
	sessionLost int
	subscribed  bool
	cancel      context.CancelFunc
}

func newCrashSubscriber(t *testing.T, parent context.Context, addr string) *crashSubscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	t.Cleanup(cancel)
	s := &crashSubscriber{got: map[string]map[int]int{"q1": {}, "q2": {}}, held: map[uint16]int{}, trace: map[int][]string{}, pidLog: map[uint16][]string{}, cancel: cancel}
	u, _ := url.Parse("mqtt://" + addr)
	ready := make(chan error, 1)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         3600,
		ReconnectBackoff:              func(int) time.Duration { return 20 * time.Millisecond },
		ConnectTimeout:                5 * time.Second,
		AttemptConnection: func(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", u.Host)
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			return &sniffConn{Conn: c, s: s}, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ack *paho.Connack) {
			s.mu.Lock()
			first := !s.subscribed
			s.subscribed = true
			if !first && !ack.SessionPresent {
				s.sessionLost++
			}
			s.mu.Unlock()
			if !first {
				return
			}
			go func() {
				_, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
					{Topic: "crash/q1", QoS: 1}, {Topic: "crash/q2", QoS: 2},
				}})
				ready <- err
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID: "crash-sub",
			// paho's default of 10 s for the SUBACK is a deadline, not what
			// this test checks; on a loaded machine only the hang guard is.
			PacketTimeout: hangGuard,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){
				func(paho.PublishReceived) (bool, error) { return true, nil },
			},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.cm = cm
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	case <-time.After(hangGuard):
		s.mu.Lock()
		conns, up := s.conns, s.subscribed
		s.mu.Unlock()
		t.Fatalf("subscriber not subscribed after %v: %d connections made, CONNACK received: %v", hangGuard, conns, up)
	}
	return s
}

func (s *crashSubscriber) hasAll(name string, ns []int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range ns {
		if s.got[name][n] == 0 {
			return false
		}
	}
	return true
}

func (s *crashSubscriber) missing(name string, ns []int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, n := range ns {
		if s.got[name][n] == 0 {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func head(ns []int) []int { return ns[:min(len(ns), 20)] }

func (s *crashSubscriber) counts(name string) map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[int]int{}
	for k, v := range s.got[name] {
		m[k] = v
	}
	return m
}

func (s *crashSubscriber) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.cm.Disconnect(ctx)
	s.cancel()
	<-s.cm.Done()
}

// checkRetained subscribes with a clean session to crash/ret/# and expects
// each topic's retained message to be at least as recent as the last one
// acknowledged before the kill.
func checkRetained(t *testing.T, addr string, kill int, want map[string]int) {
	t.Helper()
	if len(want) == 0 {
		return
	}
	var mu sync.Mutex
	got := map[string]int{}
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("crash-check-%d", kill)).
		SetCleanSession(true).SetAutoReconnect(false).SetProtocolVersion(4)
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("kill %d: retained check: connect: %v", kill, tok.Error())
	}
	defer c.Disconnect(0)
	tok := c.Subscribe("crash/ret/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		if !m.Retained() {
			return
		}
		_, num, _ := strings.Cut(string(m.Payload()), " ")
		n, _ := strconv.Atoi(num)
		mu.Lock()
		got[m.Topic()] = max(got[m.Topic()], n)
		mu.Unlock()
	})
	if !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("kill %d: retained check: subscribe: %v", kill, tok.Error())
	}
	complete := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for topic, n := range want {
			if got[topic] < n {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(hangGuard)
	for !complete() {
		if time.Now().After(deadline) {
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("kill %d: acknowledged retained messages missing after restart:\n got %v\nwant at least %v", kill, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sniffConn passes what gatewayd sends to the subscriber's receiver as it is
// read, one connection at a time.
type sniffConn struct {
	net.Conn
	s   *crashSubscriber
	buf []byte
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.buf = append(c.buf, p[:n]...)
	for {
		used := c.s.packet(c.buf)
		if used == 0 {
			break
		}
		c.buf = c.buf[used:]
	}
	return n, err
}

// packet handles the first whole MQTT v5 packet in b and returns its length,
// or 0 when b does not hold a whole packet yet.
func (s *crashSubscriber) packet(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	size, n := uint64(0), 0
	for shift := 0; ; shift += 7 {
		if 1+n >= len(b) {
			return 0
		}
		c := b[1+n]
		n++
		size |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	end := 1 + n + int(size)
	if len(b) < end {
		return 0
	}
	body := b[1+n : end]
	switch b[0] >> 4 {
	case 3: // PUBLISH
		qos := b[0] >> 1 & 3
		tl := int(binary.BigEndian.Uint16(body))
		off := 2 + tl
		var pid uint16
		if qos > 0 {
			pid = binary.BigEndian.Uint16(body[off:])
			off += 2
		}
		plen, pn := binary.Uvarint(body[off:]) // v5 properties length
		off += pn + int(plen)
		s.deliver(qos, b[0]&0x08 != 0, pid, string(body[off:]))
	case 6: // PUBREL
		pid := binary.BigEndian.Uint16(body)
		s.mu.Lock()
		s.pidLog[pid] = append(s.pidLog[pid], fmt.Sprintf("conn %d PUBREL", s.conns))
		if n, ok := s.held[pid]; ok {
			s.trace[n] = append(s.trace[n], fmt.Sprintf("PUBREL id %d", pid))
		}
		delete(s.held, pid)
		s.mu.Unlock()
	}
	return end
}

func (s *crashSubscriber) deliver(qos byte, dup bool, pid uint16, payload string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name, num, _ := strings.Cut(payload, " ")
	n, err := strconv.Atoi(num)
	m := s.got[name]
	if m == nil || err != nil {
		return
	}
	if qos == 2 {
		s.pidLog[pid] = append(s.pidLog[pid], fmt.Sprintf("conn %d PUBLISH q2 %d dup=%v", s.conns, n, dup))
		if held, ok := s.held[pid]; ok {
			// A PUBLISH with an id still held is acknowledged, not delivered.
			s.trace[n] = append(s.trace[n], fmt.Sprintf("id %d dup=%v not delivered: id held by q2 %d", pid, dup, held))
			return
		}
		s.held[pid] = n
		s.trace[n] = append(s.trace[n], fmt.Sprintf("id %d dup=%v delivered", pid, dup))
	}
	m[n]++
}

func (s *crashSubscriber) traces(ns []int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, n := range head(ns) {
		out = append(out, fmt.Sprintf("q2 %d: %v", n, s.trace[n]))
		for _, ev := range s.trace[n] {
			var pid uint16
			if _, err := fmt.Sscanf(ev, "id %d", &pid); err == nil {
				out = append(out, fmt.Sprintf("  packet id %d on the wire: %v", pid, s.pidLog[pid]))
				break
			}
		}
		for _, ev := range s.trace[n] {
			if _, by, ok := strings.Cut(ev, "held by q2 "); ok {
				h, _ := strconv.Atoi(by)
				out = append(out, fmt.Sprintf("  q2 %d: %v", h, s.trace[h]))
			}
		}
	}
	return out
}

// storedQueue describes a session's stored queue, for failure messages.
func storedQueue(dir, clientID string) string {
	st, err := state.OpenDurable(dir, state.DurableOptions{})
	if err != nil {
		return err.Error()
	}
	defer st.Close()
	snap, _ := st.Load()
	var b strings.Builder
	q := snap.Queues[clientID]
	fmt.Fprintf(&b, "stored queue of %s: %d entries\n", clientID, len(q))
	for i, o := range q {
		if i == 40 {
			break
		}
		m := snap.Messages[o.MessageID]
		payload := ""
		if m != nil {
			payload = string(m.Payload)
		}
		fmt.Fprintf(&b, "  seq %d %q qos %d phase %d packet id %d\n", o.Seq, payload, o.QoS, o.Phase, o.PacketID)
	}
	return b.String()
}
