package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"gatewayd/broker/packet"
	"gatewayd/internal/testenv"
)

// wait bounds every wait for a packet or an event; tests never assert on
// durations, they only give up eventually.
// Under qemu-user (make test-arm) it is stretched by testenv.Scale.
var wait = testenv.Scale(10 * time.Second)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards logs unless BROKER_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("BROKER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts a broker on a loopback port with the defaults changed by
// mutate, and shuts it down at the end of the test.
func startServer(t testing.TB, mutate func(*Config), opts Options) (*Server, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listeners = []ListenerConfig{{Address: "127.0.0.1:0"}}
	cfg.SysInterval = 0
	if mutate != nil {
		mutate(&cfg)
	}
	if opts.Logger == nil {
		opts.Logger = testLogger()
	}
	s, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { shutdown(t, s) })
	return s, s.Addrs()[0].String()
}

func shutdown(t testing.TB, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// rawClient speaks MQTT with the codec directly, so tests can see exactly
// which packets the broker sends and send what a library would not.
type rawClient struct {
	t   testing.TB
	nc  net.Conn
	v   packet.Version
	dec packet.Decoder
	buf []byte
	n   int
}

func dialRaw(t testing.TB, addr string, v packet.Version) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return newRaw(t, nc, v)
}

func newRaw(t testing.TB, nc net.Conn, v packet.Version) *rawClient {
	r := &rawClient{t: t, nc: nc, v: v, buf: make([]byte, 1<<16)}
	r.dec.Version = v
	return r
}

func (r *rawClient) send(p packet.Packet) {
	r.t.Helper()
	b, err := packet.Append(nil, p, r.v)
	if err != nil {
		r.t.Fatalf("encode %v: %v", p.Type(), err)
	}
	r.sendBytes(b)
}

func (r *rawClient) sendBytes(b []byte) {
	r.t.Helper()
	r.nc.SetWriteDeadline(time.Now().Add(wait))
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// read returns the next packet, or nil and the error that ended the
// connection. The packet is valid until the next read.
func (r *rawClient) read() (packet.Packet, error) {
	r.t.Helper()
	return r.readWithin(wait)
}

// readWithin reads the next packet, waiting at most d for it.
func (r *rawClient) readWithin(d time.Duration) (packet.Packet, error) {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(d))
	for {
		h, hl, err := packet.DecodeFixedHeader(r.buf[:r.n])
		if err != nil {
			return nil, err
		}
		if hl > 0 && r.n >= hl+h.Remaining {
			total := hl + h.Remaining
			body := make([]byte, h.Remaining) // own copy: the packet outlives the shift
			copy(body, r.buf[hl:total])
			r.n = copy(r.buf, r.buf[total:r.n])
			return r.dec.Decode(h, body)
		}
		if hl > 0 && hl+h.Remaining > len(r.buf) {
			r.buf = append(r.buf[:r.n], make([]byte, hl+h.Remaining-r.n)...)
		}
		m, err := r.nc.Read(r.buf[r.n:])
		r.n += m
		if err != nil && m == 0 {
			return nil, err
		}
	}
}

// next returns the next packet and fails the test if there is none.
func (r *rawClient) next() packet.Packet {
	r.t.Helper()
	p, err := r.read()
	if err != nil {
		r.t.Fatalf("reading a packet: %v", err)
	}
	return p
}

// nextPublish skips nothing: the next packet must be a PUBLISH.
func (r *rawClient) nextPublish() *packet.Publish {
	r.t.Helper()
	p := r.next()
	pub, ok := p.(*packet.Publish)
	if !ok {
		r.t.Fatalf("got %v, want PUBLISH", p.Type())
	}
	cp := *pub
	return &cp
}

func (r *rawClient) nextAck(kind packet.Type) *packet.Ack {
	r.t.Helper()
	p := r.next()
	a, ok := p.(*packet.Ack)
	if !ok || a.Kind != kind {
		r.t.Fatalf("got %v, want %v", p.Type(), kind)
	}
	cp := *a
	return &cp
}

// closed reads until the broker closes the connection and returns the
// packets seen on the way.
func (r *rawClient) closed() []packet.Type {
	r.t.Helper()
	var seen []packet.Type
	for {
		p, err := r.read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				r.t.Fatalf("connection still open after %v (saw %v)", wait, seen)
			}
			return seen
		}
		seen = append(seen, p.Type())
	}
}

// sendConnect sends CONNECT in the client's protocol version.
func (r *rawClient) sendConnect(c *packet.Connect) {
	r.t.Helper()
	c.Version = r.v
	if c.ProtocolName == nil {
		c.ProtocolName = []byte("MQTT")
		if r.v == packet.V31 {
			c.ProtocolName = []byte("MQIsdp")
		}
	}
	r.send(c)
}

// connect sends CONNECT and returns the CONNACK.
func (r *rawClient) connect(c *packet.Connect) *packet.Connack {
	r.t.Helper()
	r.sendConnect(c)
	p := r.next()
	ack, ok := p.(*packet.Connack)
	if !ok {
		r.t.Fatalf("got %v, want CONNACK", p.Type())
	}
	cp := *ack
	return &cp
}

// mustConnect connects with the given id and clean start, failing unless
// accepted.
func (r *rawClient) mustConnect(id string, clean bool) *packet.Connack {
	r.t.Helper()
	ack := r.connect(&packet.Connect{ClientID: []byte(id), CleanStart: clean, KeepAlive: 60})
	if ack.Reason != packet.Success {
		r.t.Fatalf("CONNACK reason %#x", ack.Reason)
	}
	return ack
}

func (r *rawClient) subscribe(id uint16, filter string, qos byte) []packet.ReasonCode {
	r.t.Helper()
	r.send(&packet.Subscribe{PacketID: id, Subscriptions: []packet.Subscription{{Filter: []byte(filter), QoS: qos}}})
	return r.suback(id)
}

func (r *rawClient) suback(id uint16) []packet.ReasonCode {
	r.t.Helper()
	p := r.next()
	sa, ok := p.(*packet.Suback)
	if !ok || sa.PacketID != id {
		r.t.Fatalf("got %v, want SUBACK %d", p.Type(), id)
	}
	return append([]packet.ReasonCode(nil), sa.Reasons...)
}

func (r *rawClient) publish(topic string, qos byte, retain bool, id uint16, payload string) {
	r.t.Helper()
	r.send(&packet.Publish{Topic: []byte(topic), QoS: qos, Retain: retain, PacketID: id, Payload: []byte(payload)})
}

// waitFor polls cond until it holds (or fails the test after wait).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// mu-guarded list of received payloads, for library clients.
type received struct {
	mu   sync.Mutex
	msgs []recvMsg
	ch   chan struct{}
}

type recvMsg struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	Dup     bool
	SubIDs  []int
}

func newReceived() *received { return &received{ch: make(chan struct{}, 1)} }

func (r *received) add(m recvMsg) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	select {
	case r.ch <- struct{}{}:
	default:
	}
}

func (r *received) all() []recvMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recvMsg(nil), r.msgs...)
}

// waitN waits until at least n messages arrived and returns them.
func (r *received) waitN(t testing.TB, n int) []recvMsg {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		if m := r.all(); len(m) >= n {
			return m
		}
		select {
		case <-r.ch:
		case <-timer.C:
			t.Fatalf("received %d messages, want %d: %+v", len(r.all()), n, r.all())
		}
	}
}

// rawConnect builds a CONNECT with the fields tests use most.
type rawConnect struct {
	id          string
	clean       bool
	keepAlive   uint16
	will        string
	willPayload string
	willQoS     byte
	willRetain  bool
	willDelay   uint32
	expiry      uint32
	user        string
}

func (rc rawConnect) packet() *packet.Connect {
	c := &packet.Connect{ClientID: []byte(rc.id), CleanStart: rc.clean, KeepAlive: rc.keepAlive}
	if rc.keepAlive == 0 {
		c.KeepAlive = 60
	}
	if rc.will != "" {
		c.WillFlag, c.WillTopic, c.WillPayload, c.WillQoS, c.WillRetain = true, []byte(rc.will), []byte(rc.willPayload), rc.willQoS, rc.willRetain
		if rc.willDelay > 0 {
			c.WillProps.WillDelay = rc.willDelay
			c.WillProps.Set(packet.PropWillDelay)
		}
	}
	if rc.expiry > 0 {
		c.Props.SessionExpiry = rc.expiry
		c.Props.Set(packet.PropSessionExpiry)
	}
	if rc.user != "" {
		c.UsernameFlag, c.Username = true, []byte(rc.user)
	}
	return c
}
