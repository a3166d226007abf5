package broker_test

// The conformance and interop tests drive the broker the way its users do:
// through TCP, with real MQTT clients (paho for 3.1, 3.1.1 and 5.0,
// mosquitto_pub/mosquitto_sub) and, where a behaviour can only be seen on
// the wire, with a raw client that writes and reads packet bytes itself.
// This file holds the pieces those tests share.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"gatewayd/broker"
	"gatewayd/internal/testenv"
	"gatewayd/internal/testproc"
)

// waitTimeout bounds every wait for something that must happen. It is
// generous on purpose: the tests assert what happens, never how fast.
// Under qemu-user (make test-arm) it is stretched by testenv.Scale.
var waitTimeout = testenv.Scale(10 * time.Second)

// quiet is how long a test listens for a packet that must not arrive when no
// later packet can serve as a fence. It grows with testenv.Scale, so that
// a packet that must not come has as long to show up under emulation.
var quiet = testenv.Scale(500 * time.Millisecond)

// testBroker is a broker listening on a loopback port picked by the kernel.
type testBroker struct {
	*broker.Server
	addr    string
	host    string
	port    string
	stopped bool
}

// stop shuts the broker down now (the end-of-test cleanup then skips it).
func (b *testBroker) stop(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b.stopped = true
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("broker Shutdown: %v", err)
	}
}

// checkLeaks fails t if goroutines started during the test are still running
// once every other cleanup (clients, broker) has run.
func checkLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// startBroker starts a broker on 127.0.0.1:0 with the defaults changed by
// configure (which may be nil) and shuts it down when the test ends.
func startBroker(t *testing.T, configure func(*broker.Config), opts broker.Options) *testBroker {
	t.Helper()
	checkLeaks(t)
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Address: "127.0.0.1:0"}}
	if configure != nil {
		configure(&cfg)
	}
	logs := &testproc.Buffer{}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := broker.New(cfg, opts)
	if err != nil {
		t.Fatalf("broker.New: %v", err)
	}
	if err := s.Start(); err != nil {
		t.Fatalf("broker Start: %v", err)
	}
	tb := &testBroker{Server: s}
	t.Cleanup(func() {
		if !tb.stopped {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("broker Shutdown: %v", err)
			}
		}
		if t.Failed() {
			t.Logf("broker log:\n%s", logs.String())
		}
	})
	addrs := s.Addrs()
	if len(addrs) == 0 {
		t.Fatalf("broker started but Addrs() is empty")
	}
	addr := addrs[0].String()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("broker address %q: %v", addr, err)
	}
	tb.addr, tb.host, tb.port = addr, host, port
	return tb
}

// waitOffline waits until the broker counts n persistent sessions without a
// connection, so that what is published next is queued for them rather than
// written to a connection that is still being torn down.
func waitOffline(t *testing.T, b *testBroker, n int64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for b.Stats().ClientsDisconnected < n {
		if time.Now().After(deadline) {
			t.Fatalf("Stats().ClientsDisconnected is %d %v after the client went away, want %d", b.Stats().ClientsDisconnected, waitTimeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// Received messages, whatever the client.

// message is one PUBLISH as a subscriber saw it.
type message struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	Dup     bool
	Props   *paho.PublishProperties // v5 paho clients only
	Raw     *rawPublish             // raw clients only
	Arrived time.Time
}

func (m message) String() string {
	p := m.Payload
	if len(p) > 40 {
		p = fmt.Sprintf("%s...(%d bytes)", p[:40], len(p))
	}
	return fmt.Sprintf("%s %q qos=%d retain=%v dup=%v", m.Topic, p, m.QoS, m.Retain, m.Dup)
}

// summary lists at most 20 messages for a failure message.
func summary(msgs []message) string {
	if len(msgs) <= 20 {
		return fmt.Sprint(msgs)
	}
	return fmt.Sprintf("%v ... %v (%d in all)", msgs[:10], msgs[len(msgs)-10:], len(msgs))
}

// inbox records the messages one client receives, in order.
type inbox struct {
	mu   sync.Mutex
	msgs []message
}

func (b *inbox) add(m message) {
	m.Arrived = time.Now()
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

func (b *inbox) all() []message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]message(nil), b.msgs...)
}

// waitFor waits until some received message satisfies match and returns it.
func (b *inbox) waitFor(t *testing.T, what string, match func(message) bool) message {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, m := range b.all() {
			if match(m) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not received within %v; received instead: %s", what, waitTimeout, summary(b.all()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitPayload waits for a message with the given payload.
func (b *inbox) waitPayload(t *testing.T, payload string) message {
	t.Helper()
	return b.waitFor(t, fmt.Sprintf("message %q", payload), func(m message) bool { return m.Payload == payload })
}

// waitCount waits until at least n messages matching match were received and
// returns all of them.
func (b *inbox) waitCount(t *testing.T, what string, n int, match func(message) bool) []message {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var got []message
		for _, m := range b.all() {
			if match == nil || match(m) {
				got = append(got, m)
			}
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d messages, got %d within %v: %s", what, n, len(got), waitTimeout, summary(got))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (b *inbox) withTopic(topic string) []message {
	var out []message
	for _, m := range b.all() {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

func (b *inbox) withPayload(payload string) []message {
	var out []message
	for _, m := range b.all() {
		if m.Payload == payload {
			out = append(out, m)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// paho.mqtt.golang: MQTT 3.1 (level 3) and 3.1.1 (level 4).

type v3Client struct {
	mqtt.Client
	in   *inbox
	lost chan error
}

// v3Options returns options for a paho.mqtt.golang client that never
// reconnects on its own and records every message in one inbox (subscribe
// with a nil callback so that each PUBLISH is recorded exactly once).
func v3Options(b *testBroker, id string, version uint, clean bool) *mqtt.ClientOptions {
	return mqtt.NewClientOptions().
		AddBroker("tcp://" + b.addr).
		SetClientID(id).
		SetProtocolVersion(version).
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(waitTimeout).
		SetWriteTimeout(waitTimeout).
		SetOrderMatters(true)
}

// connectV3 connects a paho.mqtt.golang client and disconnects it at the end
// of the test. The returned token's SessionPresent and ReturnCode are there
// for the test to check.
func connectV3(t *testing.T, opts *mqtt.ClientOptions) (*v3Client, *mqtt.ConnectToken) {
	t.Helper()
	c := &v3Client{in: &inbox{}, lost: make(chan error, 1)}
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		c.in.add(message{Topic: m.Topic(), Payload: string(m.Payload()), QoS: m.Qos(), Retain: m.Retained(), Dup: m.Duplicate()})
	})
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		select {
		case c.lost <- err:
		default:
		}
	})
	c.Client = mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("paho.mqtt.golang %s: CONNECT not answered within %v", opts.ClientID, waitTimeout)
	}
	t.Cleanup(func() {
		if c.IsConnectionOpen() {
			c.Disconnect(100)
		}
	})
	return c, tok.(*mqtt.ConnectToken)
}

// dialV3 connects and fails the test unless the broker accepts.
func dialV3(t *testing.T, b *testBroker, id string, version uint, clean bool) *v3Client {
	t.Helper()
	c, tok := connectV3(t, v3Options(b, id, version, clean))
	if err := tok.Error(); err != nil {
		t.Fatalf("client %q (protocol level %d) CONNECT refused: %v", id, version, err)
	}
	return c
}

func (c *v3Client) sub(t *testing.T, filter string, qos byte) byte {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("SUBSCRIBE %q: no SUBACK within %v", filter, waitTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("SUBSCRIBE %q: %v", filter, err)
	}
	return tok.(*mqtt.SubscribeToken).Result()[filter]
}

func (c *v3Client) pub(t *testing.T, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("PUBLISH %q qos %d: not acknowledged within %v", topic, qos, waitTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("PUBLISH %q qos %d: %v", topic, qos, err)
	}
}

// ---------------------------------------------------------------------------
// paho.golang: MQTT 5.0.

type v5Client struct {
	*paho.Client
	in          *inbox
	serverDisco chan *paho.Disconnect
	clientErr   chan error
}

func u16p(v uint16) *uint16 { return &v }
func u32p(v uint32) *uint32 { return &v }
func bytep(v byte) *byte    { return &v }
func intp(v int) *int       { return &v }

// connectV5 dials the broker and sends cp with paho.golang. configure may
// change the client configuration (for example manual acknowledgement). The
// Connack is returned even when the broker refuses, with the error.
func connectV5(t *testing.T, b *testBroker, cp *paho.Connect, configure func(*paho.ClientConfig)) (*v5Client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatalf("dial %s: %v", b.addr, err)
	}
	c := &v5Client{in: &inbox{}, serverDisco: make(chan *paho.Disconnect, 1), clientErr: make(chan error, 1)}
	cfg := paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			c.in.add(message{Topic: p.Topic, Payload: string(p.Payload), QoS: p.QoS, Retain: p.Retain, Dup: p.Duplicate(), Props: p.Properties})
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) {
			select {
			case c.serverDisco <- d:
			default:
			}
		},
		OnClientError: func(err error) {
			select {
			case c.clientErr <- err:
			default:
			}
		},
		PacketTimeout: waitTimeout,
	}
	if configure != nil {
		configure(&cfg)
	}
	c.Client = paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return c, ca, err
	}
	t.Cleanup(func() {
		select {
		case <-c.Done():
		default:
			_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		}
	})
	return c, ca, nil
}

// dialV5 connects with clean start, keep alive 30 s and no session expiry
// unless cp says otherwise, and fails the test if the broker refuses.
func dialV5(t *testing.T, b *testBroker, cp *paho.Connect) (*v5Client, *paho.Connack) {
	t.Helper()
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	c, ca, err := connectV5(t, b, cp, nil)
	if err != nil {
		t.Fatalf("v5 client %q CONNECT refused: %v (CONNACK %+v)", cp.ClientID, err, ca)
	}
	return c, ca
}

func (c *v5Client) sub(t *testing.T, s *paho.Subscribe) *paho.Suback {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sa, err := c.Subscribe(ctx, s)
	if err != nil && sa == nil {
		t.Fatalf("SUBSCRIBE %+v: %v", s.Subscriptions, err)
	}
	return sa
}

// sub1 subscribes to one filter and fails the test unless it is granted.
func (c *v5Client) sub1(t *testing.T, filter string, qos byte) {
	t.Helper()
	sa := c.sub(t, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		t.Fatalf("SUBSCRIBE %q qos %d: SUBACK reasons %v, want granted", filter, qos, sa.Reasons)
	}
}

func contextWithTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), waitTimeout)
}

func (c *v5Client) pub(t *testing.T, p *paho.Publish) *paho.PublishResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pr, err := c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("PUBLISH %q qos %d: %v (response %+v)", p.Topic, p.QoS, err, pr)
	}
	return pr
}

// ---------------------------------------------------------------------------
// Raw client: writes and reads packet bytes itself.

// Property identifiers (MQTT 5.0 section 2.2.2.2) used by the raw client.
const (
	propPayloadFormat     byte = 0x01
	propMessageExpiry     byte = 0x02
	propContentType       byte = 0x03
	propResponseTopic     byte = 0x08
	propCorrelationData   byte = 0x09
	propSubscriptionID    byte = 0x0B
	propSessionExpiry     byte = 0x11
	propAssignedClientID  byte = 0x12
	propServerKeepAlive   byte = 0x13
	propWillDelay         byte = 0x18
	propResponseInfo      byte = 0x1A
	propReasonString      byte = 0x1F
	propReceiveMaximum    byte = 0x21
	propTopicAliasMaximum byte = 0x22
	propTopicAlias        byte = 0x23
	propUser              byte = 0x26
	propMaximumPacketSize byte = 0x27
)

// Packet types.
const (
	tCONNECT     byte = 1
	tCONNACK     byte = 2
	tPUBLISH     byte = 3
	tPUBACK      byte = 4
	tPUBREC      byte = 5
	tPUBREL      byte = 6
	tPUBCOMP     byte = 7
	tSUBSCRIBE   byte = 8
	tSUBACK      byte = 9
	tUNSUBSCRIBE byte = 10
	tUNSUBACK    byte = 11
	tPINGREQ     byte = 12
	tPINGRESP    byte = 13
	tDISCONNECT  byte = 14
)

var typeNames = map[byte]string{1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
	7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
	14: "DISCONNECT", 15: "AUTH"}

// kinds of property values, by identifier.
const (
	kByte = iota + 1
	kU16
	kU32
	kVar
	kStr
	kBin
	kPair
)

var propKinds = map[byte]int{
	0x01: kByte, 0x17: kByte, 0x19: kByte, 0x24: kByte, 0x25: kByte, 0x28: kByte, 0x29: kByte, 0x2A: kByte,
	0x13: kU16, 0x21: kU16, 0x22: kU16, 0x23: kU16,
	0x02: kU32, 0x11: kU32, 0x18: kU32, 0x27: kU32,
	0x0B: kVar,
	0x03: kStr, 0x08: kStr, 0x12: kStr, 0x15: kStr, 0x1A: kStr, 0x1C: kStr, 0x1F: kStr,
	0x09: kBin, 0x16: kBin,
	0x26: kPair,
}

func varint(n int) []byte {
	var out []byte
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			return out
		}
	}
}

func u16(v uint16) []byte { return []byte{byte(v >> 8), byte(v)} }
func u32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// str is a length-prefixed string or binary field.
func str(s string) []byte { return append(u16(uint16(len(s))), s...) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// pkt frames body with the fixed header byte first.
func pkt(first byte, body ...[]byte) []byte {
	b := cat(body...)
	return cat([]byte{first}, varint(len(b)), b)
}

// Property encoders.
func pByte(id, v byte) []byte        { return []byte{id, v} }
func pU16(id byte, v uint16) []byte  { return cat([]byte{id}, u16(v)) }
func pU32(id byte, v uint32) []byte  { return cat([]byte{id}, u32(v)) }
func pVar(id byte, v int) []byte     { return cat([]byte{id}, varint(v)) }
func pStr(id byte, v string) []byte  { return cat([]byte{id}, str(v)) }
func pPair(key, value string) []byte { return cat([]byte{propUser}, str(key), str(value)) }
func props(ps ...[]byte) []byte      { b := cat(ps...); return cat(varint(len(b)), b) }
func noProps() []byte                { return []byte{0} }
func fmtBytes(b []byte) string       { return fmt.Sprintf("% x", b) }
func typeName(t byte) string         { return typeNames[t] }
func reasonHex(r byte) string        { return fmt.Sprintf("0x%02X", r) }
func propsIf(v5 bool, p []byte) []byte {
	if v5 {
		return p
	}
	return nil
}
func boolByte(b bool, bit byte) byte {
	if b {
		return bit
	}
	return 0
}
func strp(s string) *string { return &s }

// willSpec is the will in a raw CONNECT.
type willSpec struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	Props   [][]byte // v5 will properties
}

// connectSpec describes a raw CONNECT.
type connectSpec struct {
	Version   byte   // 3, 4 or 5
	Name      string // protocol name; default by version
	ClientID  string
	Clean     bool
	KeepAlive uint16
	Props     [][]byte // v5 CONNECT properties
	Will      *willSpec
	Username  *string
	Password  *string
}

func connectPacket(c connectSpec) []byte {
	name := c.Name
	if name == "" {
		name = "MQTT"
		if c.Version == 3 {
			name = "MQIsdp"
		}
	}
	var flags byte
	flags |= boolByte(c.Clean, 0x02)
	var payload []byte
	payload = append(payload, str(c.ClientID)...)
	if c.Will != nil {
		flags |= 0x04 | c.Will.QoS<<3 | boolByte(c.Will.Retain, 0x20)
		if c.Version == 5 {
			payload = append(payload, props(c.Will.Props...)...)
		}
		payload = append(payload, str(c.Will.Topic)...)
		payload = append(payload, str(c.Will.Payload)...)
	}
	if c.Username != nil {
		flags |= 0x80
		payload = append(payload, str(*c.Username)...)
	}
	if c.Password != nil {
		flags |= 0x40
		payload = append(payload, str(*c.Password)...)
	}
	var p []byte
	if c.Version == 5 {
		p = props(c.Props...)
	}
	return pkt(0x10, str(name), []byte{c.Version, flags}, u16(c.KeepAlive), p, payload)
}

// pubSpec describes a raw PUBLISH.
type pubSpec struct {
	Topic   string
	Payload string
	QoS     byte
	Retain  bool
	Dup     bool
	ID      uint16
	Props   [][]byte
}

func publishPacket(v5 bool, p pubSpec) []byte {
	first := 0x30 | p.QoS<<1 | boolByte(p.Retain, 1) | boolByte(p.Dup, 8)
	var id []byte
	if p.QoS > 0 {
		id = u16(p.ID)
	}
	return pkt(first, str(p.Topic), id, propsIf(v5, props(p.Props...)), []byte(p.Payload))
}

// rawSub is one filter with its subscription options byte.
type rawSub struct {
	Filter  string
	Options byte // QoS in bits 0-1; v5: no local 0x04, retain as published 0x08, retain handling << 4
}

func subscribePacket(v5 bool, id uint16, p [][]byte, subs ...rawSub) []byte {
	var payload []byte
	for _, s := range subs {
		payload = append(payload, str(s.Filter)...)
		payload = append(payload, s.Options)
	}
	return pkt(0x82, u16(id), propsIf(v5, props(p...)), payload)
}

func ackPacket(v5 bool, kind byte, id uint16) []byte {
	first := kind << 4
	if kind == tPUBREL {
		first |= 0x02
	}
	return pkt(first, u16(id))
}

// rawProp is one decoded v5 property.
type rawProp struct {
	ID       byte
	Num      uint32
	Str      string
	Key, Val string
}

type rawProps []rawProp

func (ps rawProps) num(id byte) (uint32, bool) {
	for _, p := range ps {
		if p.ID == id {
			return p.Num, true
		}
	}
	return 0, false
}

func (ps rawProps) nums(id byte) []uint32 {
	var out []uint32
	for _, p := range ps {
		if p.ID == id {
			out = append(out, p.Num)
		}
	}
	return out
}

func (ps rawProps) str(id byte) (string, bool) {
	for _, p := range ps {
		if p.ID == id {
			return p.Str, true
		}
	}
	return "", false
}

// reader decodes fields from a packet body.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		if r.err == nil {
			r.err = io.ErrUnexpectedEOF
		}
		return make([]byte, n)
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}
func (r *reader) byte1() byte { return r.take(1)[0] }
func (r *reader) u16() uint16 { b := r.take(2); return uint16(b[0])<<8 | uint16(b[1]) }
func (r *reader) u32() uint32 {
	b := r.take(4)
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
func (r *reader) str() string  { n := r.u16(); return string(r.take(int(n))) }
func (r *reader) rest() []byte { out := r.b; r.b = nil; return out }
func (r *reader) varint() int {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		b := r.byte1()
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			return n
		}
		mul *= 128
	}
	r.err = errors.New("variable byte integer longer than 4 bytes")
	return n
}

func (r *reader) props() rawProps {
	n := r.varint()
	sub := &reader{b: r.take(n)}
	var ps rawProps
	for len(sub.b) > 0 && sub.err == nil {
		id := sub.byte1()
		p := rawProp{ID: id}
		switch propKinds[id] {
		case kByte:
			p.Num = uint32(sub.byte1())
		case kU16:
			p.Num = uint32(sub.u16())
		case kU32:
			p.Num = sub.u32()
		case kVar:
			p.Num = uint32(sub.varint())
		case kStr, kBin:
			p.Str = sub.str()
		case kPair:
			p.Key = sub.str()
			p.Val = sub.str()
		default:
			sub.err = fmt.Errorf("unknown property identifier 0x%02X", id)
		}
		ps = append(ps, p)
	}
	if sub.err != nil && r.err == nil {
		r.err = sub.err
	}
	return ps
}

// rawPacket is one packet read off the wire.
type rawPacket struct {
	Type  byte
	Flags byte
	Body  []byte
}

func (p *rawPacket) String() string {
	return fmt.Sprintf("%s flags=%x body=[% x]", typeName(p.Type), p.Flags, p.Body)
}

// rawPublish is a decoded PUBLISH.
type rawPublish struct {
	Topic   string
	QoS     byte
	Retain  bool
	Dup     bool
	ID      uint16
	Props   rawProps
	Payload string
}

func (p *rawPacket) publish(v5 bool) (*rawPublish, error) {
	r := &reader{b: p.Body}
	pub := &rawPublish{Dup: p.Flags&8 != 0, QoS: (p.Flags >> 1) & 3, Retain: p.Flags&1 != 0}
	pub.Topic = r.str()
	if pub.QoS > 0 {
		pub.ID = r.u16()
	}
	if v5 {
		pub.Props = r.props()
	}
	pub.Payload = string(r.rest())
	return pub, r.err
}

// rawConnack is a decoded CONNACK.
type rawConnack struct {
	SessionPresent bool
	Code           byte
	Props          rawProps
}

func (p *rawPacket) connack(v5 bool) (*rawConnack, error) {
	r := &reader{b: p.Body}
	ca := &rawConnack{SessionPresent: r.byte1()&1 != 0, Code: r.byte1()}
	if v5 && len(r.b) > 0 {
		ca.Props = r.props()
	}
	return ca, r.err
}

// reason returns the reason code of a v5 DISCONNECT or ack (0 when omitted).
func (p *rawPacket) disconnectReason() byte {
	if len(p.Body) == 0 {
		return 0
	}
	return p.Body[0]
}

// packetID returns the packet identifier of an ack, SUBACK or UNSUBACK.
func (p *rawPacket) packetID() uint16 {
	if len(p.Body) < 2 {
		return 0
	}
	return uint16(p.Body[0])<<8 | uint16(p.Body[1])
}

// subackReasons returns the reason codes (granted QoS) of a SUBACK.
func (p *rawPacket) subackReasons(v5 bool) []byte {
	r := &reader{b: p.Body}
	r.u16()
	if v5 {
		r.props()
	}
	return r.rest()
}

type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
	v5   bool
	name string
}

// dialRaw opens a TCP connection to the broker, closed when the test ends.
func dialRaw(t *testing.T, b *testBroker, name string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatalf("%s: dial %s: %v", name, b.addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawClient{t: t, conn: conn, br: bufio.NewReader(conn), name: name}
}

func (c *rawClient) send(b ...[]byte) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := c.conn.Write(cat(b...)); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// trySend writes and reports the error instead of failing (the broker may
// have closed the connection already).
func (c *rawClient) trySend(b ...[]byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(waitTimeout))
	_, err := c.conn.Write(cat(b...))
	return err
}

// next reads one packet, waiting at most d.
func (c *rawClient) next(d time.Duration) (*rawPacket, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	first, err := c.br.ReadByte()
	if err != nil {
		return nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return nil, errors.New("remaining length longer than 4 bytes")
		}
		b, err := c.br.ReadByte()
		if err != nil {
			return nil, err
		}
		n += int(b&0x7f) * mul
		if b&0x80 == 0 {
			break
		}
		mul *= 128
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, err
	}
	return &rawPacket{Type: first >> 4, Flags: first & 0x0f, Body: body}, nil
}

// expect reads the next packet and fails unless it is of type typ.
func (c *rawClient) expect(typ byte) *rawPacket {
	c.t.Helper()
	p, err := c.next(waitTimeout)
	if err != nil {
		c.t.Fatalf("%s: want %s, got error %v", c.name, typeName(typ), err)
	}
	if p.Type != typ {
		c.t.Fatalf("%s: want %s, got %v", c.name, typeName(typ), p)
	}
	return p
}

// expectAny reads the next packet, whatever it is.
func (c *rawClient) expectAny() *rawPacket {
	c.t.Helper()
	p, err := c.next(waitTimeout)
	if err != nil {
		c.t.Fatalf("%s: want a packet, got error %v", c.name, err)
	}
	return p
}

// expectPublish reads the next packet and fails unless it is a PUBLISH.
func (c *rawClient) expectPublish() *rawPublish {
	c.t.Helper()
	p := c.expect(tPUBLISH)
	pub, err := p.publish(c.v5)
	if err != nil {
		c.t.Fatalf("%s: undecodable PUBLISH %v: %v", c.name, p, err)
	}
	return pub
}

// expectNothing fails if a packet arrives within quiet.
func (c *rawClient) expectNothing(what string) {
	c.t.Helper()
	p, err := c.next(quiet)
	if err == nil {
		c.t.Fatalf("%s: %s: want no packet, got %v", c.name, what, p)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("%s: %s: want the connection to stay open and silent, got %v", c.name, what, err)
	}
}

// connect sends CONNECT and returns the CONNACK, failing unless accepted.
func (c *rawClient) connect(spec connectSpec) *rawConnack {
	c.t.Helper()
	ca := c.connectAny(spec)
	if ca.Code != 0 {
		c.t.Fatalf("%s: CONNECT (level %d, id %q) refused with CONNACK %s", c.name, spec.Version, spec.ClientID, reasonHex(ca.Code))
	}
	return ca
}

// connectAny sends CONNECT and returns the CONNACK whatever its code.
func (c *rawClient) connectAny(spec connectSpec) *rawConnack {
	c.t.Helper()
	c.v5 = spec.Version == 5
	c.send(connectPacket(spec))
	p := c.expect(tCONNACK)
	ca, err := p.connack(c.v5)
	if err != nil {
		c.t.Fatalf("%s: undecodable CONNACK %v: %v", c.name, p, err)
	}
	return ca
}

// subscribe sends SUBSCRIBE with packet id 1 and returns the SUBACK reasons.
func (c *rawClient) subscribe(p [][]byte, subs ...rawSub) []byte {
	c.t.Helper()
	c.send(subscribePacket(c.v5, 1, p, subs...))
	sa := c.expect(tSUBACK)
	return sa.subackReasons(c.v5)
}

// waitClosed reads until the broker closes the connection and returns the
// packets that arrived first. It fails if the connection stays open for
// waitTimeout.
func (c *rawClient) waitClosed(what string) []*rawPacket {
	c.t.Helper()
	var got []*rawPacket
	deadline := time.Now().Add(waitTimeout)
	for {
		p, err := c.next(time.Until(deadline))
		if err == nil {
			got = append(got, p)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("%s: %s: want the broker to close the connection, still open after %v (received %v)", c.name, what, waitTimeout, got)
		}
		return got
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *rawClient) close() { _ = c.conn.Close() }

// describePackets lists packets for failure messages.
func describePackets(ps []*rawPacket) string {
	if len(ps) == 0 {
		return "nothing"
	}
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}
