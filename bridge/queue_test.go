package bridge

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/internal/testproxy"
)

func payloads(ms []*client.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Payload))
	}
	return out
}

func seqs(vals ...int) []string {
	var out []string
	for _, v := range vals {
		out = append(out, strconv.Itoa(v))
	}
	return out
}

func span(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A full queue drops by its policy and counts every drop exactly. The
// first max_inflight messages are already in the bridge's hands (in flight
// to the cloud) when the link is down, so they are never dropped; the queue
// holds them and the rest of its 10.
func TestQueueBoundsByPolicy(t *testing.T) {
	for _, w := range []int{1, 4} {
		cases := []struct {
			policy           string
			want             []string
			dropped, refused uint64
		}{
			{PolicyDropOldest, seqs(append(span(0, w-1), span(15+w, 24)...)...), 15, 0},
			{PolicyRejectNew, seqs(span(0, 9)...), 0, 15},
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/max_inflight %d", c.policy, w), func(t *testing.T) {
				e := newQueueEnv(t, Queue{MaxMessages: 10, Policy: c.policy}, w)
				publishSeq(t, e.pub, "sensors/seq", 1, 0, 25)
				waitQueued(t, e.b, 10, 10*time.Second)
				st := e.b.Stats()
				if st.Dropped["queue_full"] != c.dropped || st.Rejected["queue_full"] != c.refused {
					t.Errorf("dropped %d rejected %d, want %d and %d", st.Dropped["queue_full"], st.Rejected["queue_full"], c.dropped, c.refused)
				}
				waitInflightOut(t, e.b, w)
				e.p.Restore()
				got := e.up.waitFor(t, 20*time.Second, "queue drained", func(ms []*client.Message) bool { return len(ms) >= len(c.want) })
				waitQueued(t, e.b, 0, 10*time.Second)
				if !equal(payloads(got), c.want) {
					t.Errorf("arrived %v, want %v", payloads(got), c.want)
				}
			})
		}
	}
}

// Messages older than queue.max_age are dropped and counted as expired,
// except the first max_inflight, which were in the bridge's hands.
func TestQueueMaxAge(t *testing.T) {
	for _, w := range []int{1, 3} {
		t.Run(fmt.Sprintf("max_inflight %d", w), func(t *testing.T) {
			e := newQueueEnv(t, Queue{MaxAge: 2 * time.Second}, w)
			publishSeq(t, e.pub, "sensors/seq", 1, 0, 5)
			for e.b.Stats().OldestQueued <= 2100*time.Millisecond {
				time.Sleep(20 * time.Millisecond)
			}
			publishSeq(t, e.pub, "sensors/seq", 1, 5, 5)
			if got := e.b.Stats().Dropped["expired"]; got != uint64(5-w) {
				t.Errorf("expired %d, want %d (messages %d-4; 0-%d are in flight)", got, 5-w, w, w-1)
			}
			e.p.Restore()
			want := seqs(append(span(0, w-1), span(5, 9)...)...)
			got := e.up.waitFor(t, 20*time.Second, "fresh ones arrive", count(len(want)))
			if !equal(payloads(got), want) {
				t.Errorf("arrived %v, want %v", payloads(got), want)
			}
		})
	}
}

type queueEnv struct {
	*outageEnv
}

func newQueueEnv(t *testing.T, q Queue, window int) queueEnv {
	e := &outageEnv{m: startMosquitto(t), dir: t.TempDir()}
	e.p = testproxy.New(t, e.m.Addr())
	e.g = startGateway(t, e.dir)
	e.up = cloudSubscriber(t, e.m, "upstream", "gw1/sensors/seq")
	e.cfg = basicConfig(e.p.URL())
	e.cfg.Queue = q
	e.cfg.MaxInflight = window
	e.b = startBridge(t, e.g, e.cfg)
	waitState(t, e.b, "connected", 10*time.Second)
	e.pub = localClient(t, e.g, "sensor")
	e.p.Cut(true)
	waitState(t, e.b, "disconnected", 10*time.Second)
	return queueEnv{e}
}

// aws-iot: a QoS 2 rule is sent at QoS 1; a payload over 128 KiB is
// acknowledged locally, counted as rejected too_large and never sent; the
// messages around it go on.
func TestProfileAWSIoTLimits(t *testing.T) {
	m := startMosquitto(t)
	g := startGateway(t, t.TempDir())
	up := cloudSubscriber(t, m, "upstream", "dt/#")
	cfg := Config{
		Name: "aws", URL: m.TLSURL(), Profile: ProfileAWSIoT, ClientID: "thing-1",
		Username: cloudUser, Password: cloudPass, TLS: TLS{CAFile: m.CAFile},
		Topics: []Rule{{Pattern: "#", QoS: 2, LocalPrefix: "sensors/", RemotePrefix: "dt/"}},
	}
	b := startBridge(t, g, cfg)
	waitState(t, b, "connected", 10*time.Second)
	pub := localClient(t, g, "sensor")
	ctx := testCtx(t, 10*time.Second)
	for _, p := range [][]byte{[]byte("before"), bytes.Repeat([]byte("x"), 128<<10+1), []byte("after")} {
		if err := pub.Publish(ctx, &client.Message{Topic: "sensors/t", Payload: p, QoS: 2}); err != nil {
			t.Fatal(err)
		}
	}
	got := up.waitFor(t, 10*time.Second, "after", has("dt/t", "after"))
	got = byTopic(got, "dt/t")
	if !equal(payloads(got), []string{"before", "after"}) {
		t.Errorf("arrived %d messages, want before and after", len(got))
	}
	for _, m := range got {
		if m.QoS != 1 {
			t.Errorf("QoS %d at the cloud, want 1", m.QoS)
		}
	}
	waitQueued(t, b, 0, 5*time.Second)
	if st := b.Stats(); st.Rejected["too_large"] != 1 || st.Sent != 2 {
		t.Errorf("stats %+v", st)
	}
	if b.RemoteClientID() != "thing-1" {
		t.Errorf("client id %q", b.RemoteClientID())
	}
}

// A local topic that is valid locally but over 65535 bytes with the remote
// prefix can never be sent: it is acknowledged locally, counted as rejected
// invalid, and the messages after it go on.
func TestTopicTooLongWithPrefixRejected(t *testing.T) {
	m := startMosquitto(t)
	g := startGateway(t, t.TempDir())
	cfg := basicConfig(m.URL())
	cfg.Topics[0].RemotePrefix = "gw1/sensors/with/a/much/longer/prefix/"
	up := cloudSubscriber(t, m, "upstream", cfg.Topics[0].RemotePrefix+"seq")
	b := startBridge(t, g, cfg)
	waitState(t, b, "connected", 10*time.Second)
	pub := localClient(t, g, "sensor")
	ctx := testCtx(t, 10*time.Second)
	if err := pub.Publish(ctx, &client.Message{Topic: "sensors/" + strings.Repeat("a", 65500), Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	publishSeq(t, pub, "sensors/seq", 1, 0, 3)
	got := up.waitFor(t, 10*time.Second, "the messages after it", arrived(3))
	checkSequence(t, got, 3)
	waitQueued(t, b, 0, 5*time.Second)
	if st := b.Stats(); st.Rejected["invalid"] != 1 || st.Sent != 3 {
		t.Errorf("sent %d (want 3), rejected %v (want invalid 1)", st.Sent, st.Rejected)
	}
}

// After an outage the backlog drains at drain_rate: in no one-second window
// of the bridge's own send log are there more than rate+burst sends.
func TestDrainRateHolds(t *testing.T) {
	const rate, n = 300, 900
	e := newQueueEnv(t, Queue{}, 0)
	stopBridge(t, e.b)
	e.cfg.DrainRate = rate
	e.b = startBridge(t, e.g, e.cfg)
	publishSeq(t, e.pub, "sensors/seq", 1, 0, n)
	waitQueued(t, e.b, n, 10*time.Second)
	e.p.Restore()
	got := e.up.waitFor(t, 30*time.Second, "drained", arrived(n))
	checkSequence(t, got, n)
	waitQueued(t, e.b, 0, 10*time.Second) // the last PUBACK may come after the subscriber's copy
	e.b.sendLogMu.Lock()
	log := append([]time.Time(nil), e.b.sendLog...)
	e.b.sendLogMu.Unlock()
	if len(log) != n {
		t.Fatalf("send log has %d sends, want %d", len(log), n)
	}
	limit := rate + int(e.b.pace.burst)
	worst := 0
	for i := range log {
		j := i
		for j < len(log) && log[j].Sub(log[i]) < time.Second {
			j++
		}
		worst = max(worst, j-i)
	}
	if worst > limit {
		t.Errorf("%d sends in one second, limit %d", worst, limit)
	}
	t.Logf("most sends in one second: %d (rate %d, burst %v)", worst, rate, e.b.pace.burst)
}
