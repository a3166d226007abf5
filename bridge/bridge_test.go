package bridge

import (
	"context"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/internal/testmosquitto"
	"gatewayd/internal/testproxy"
)

func byTopic(ms []*client.Message, topic string) []*client.Message {
	var out []*client.Message
	for _, m := range ms {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

func has(topic, payload string) func([]*client.Message) bool {
	return func(ms []*client.Message) bool {
		for _, m := range ms {
			if m.Topic == topic && string(m.Payload) == payload {
				return true
			}
		}
		return false
	}
}

// Out, in and both directions with prefixes, over TLS with a password, at
// QoS 1 and 2, retained messages, and no loops for "both" rules: with an
// MQTT 5 cloud session (no-local) and an MQTT 3.1.1 one (echo suppression).
func TestBridgeDirectionsPrefixesQoSRetainAndNoLoops(t *testing.T) {
	for _, proto := range []string{"5", "3.1.1"} {
		t.Run("protocol "+proto, func(t *testing.T) {
			m := startMosquitto(t)
			g := startGateway(t, t.TempDir())
			cfg := Config{
				Name: "cloud", URL: m.TLSURL(), Username: cloudUser, Password: cloudPass, Protocol: proto,
				TLS:     TLS{CAFile: m.CAFile},
				Backoff: Backoff{Base: 50 * time.Millisecond, Cap: 300 * time.Millisecond},
				Topics: []Rule{
					{Pattern: "#", Direction: DirOut, QoS: 1, LocalPrefix: "sensors/", RemotePrefix: "gw1/sensors/"},
					{Pattern: "alarm/#", Direction: DirOut, QoS: 2, RemotePrefix: "gw1/"},
					{Pattern: "#", Direction: DirIn, QoS: 2, LocalPrefix: "commands/", RemotePrefix: "cloud/gw1/cmd/"},
					{Pattern: "#", Direction: DirBoth, QoS: 1, LocalPrefix: "shared/", RemotePrefix: "gw1/shared/"},
				},
			}
			up := cloudSubscriber(t, m, "up-"+proto, "gw1/#")
			local := newRecorder()
			lc := localClient(t, g, "local-sub")
			if _, err := lc.Subscribe(testCtx(t, 5*time.Second), local.handle,
				client.Subscription{Filter: "commands/#", QoS: 2}, client.Subscription{Filter: "shared/#", QoS: 1}); err != nil {
				t.Fatal(err)
			}
			b := startBridge(t, g, cfg)
			waitState(t, b, "connected", 10*time.Second)
			waitSubscribed(t, b, 10*time.Second)
			ctx := testCtx(t, 20*time.Second)
			pub := localClient(t, g, "local-pub")
			cloud := connect(t, client.Options{URL: m.URL(), ClientID: "cloud-pub", Username: cloudUser, Password: cloudPass, CleanStart: true})

			// Out with prefixes, QoS 1 and 2.
			if err := pub.Publish(ctx, &client.Message{Topic: "sensors/temp", Payload: []byte("21.5"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(ctx, &client.Message{Topic: "alarm/door", Payload: []byte("open"), QoS: 2}); err != nil {
				t.Fatal(err)
			}
			got := up.waitFor(t, 10*time.Second, "out messages upstream", func(ms []*client.Message) bool {
				return has("gw1/sensors/temp", "21.5")(ms) && has("gw1/alarm/door", "open")(ms)
			})
			if q := byTopic(got, "gw1/alarm/door")[0].QoS; q != 2 {
				t.Errorf("QoS 2 rule: arrived at QoS %d", q)
			}
			if q := byTopic(got, "gw1/sensors/temp")[0].QoS; q != 1 {
				t.Errorf("QoS 1 rule: arrived at QoS %d", q)
			}
			// The bridge's status, retained, under remote prefix + gateway id.
			up.waitFor(t, 10*time.Second, "status online", has("gw1/sensors/gw1/status", "online"))

			// Retained going out: a subscriber arriving later gets it retained.
			if err := pub.Publish(ctx, &client.Message{Topic: "sensors/state", Payload: []byte("up"), QoS: 1, Retain: true}); err != nil {
				t.Fatal(err)
			}
			up.waitFor(t, 10*time.Second, "retained out", has("gw1/sensors/state", "up"))
			late := cloudSubscriber(t, m, "late-"+proto, "gw1/sensors/state")
			if r := late.waitFor(t, 10*time.Second, "retained upstream", count(1)); !r[0].Retain || string(r[0].Payload) != "up" {
				t.Errorf("upstream retained: %+v", r[0])
			}

			// In with prefixes.
			if err := cloud.Publish(ctx, &client.Message{Topic: "cloud/gw1/cmd/led", Payload: []byte("on"), QoS: 2}); err != nil {
				t.Fatal(err)
			}
			local.waitFor(t, 10*time.Second, "in message locally", has("commands/led", "on"))
			if proto == "5" {
				// Retain as published needs MQTT 5 at the cloud.
				if err := cloud.Publish(ctx, &client.Message{Topic: "cloud/gw1/cmd/mode", Payload: []byte("eco"), QoS: 1, Retain: true}); err != nil {
					t.Fatal(err)
				}
				local.waitFor(t, 10*time.Second, "retained in", has("commands/mode", "eco"))
				lateLocal := newRecorder()
				lc2 := localClient(t, g, "local-late")
				if _, err := lc2.Subscribe(ctx, lateLocal.handle, client.Subscription{Filter: "commands/mode", QoS: 1}); err != nil {
					t.Fatal(err)
				}
				if r := lateLocal.waitFor(t, 10*time.Second, "retained locally", count(1)); !r[0].Retain {
					t.Errorf("local copy not retained: %+v", r[0])
				}
			}

			// Both: each side's message reaches the other once and never
			// comes back.
			if err := pub.Publish(ctx, &client.Message{Topic: "shared/x", Payload: []byte("L1"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if err := cloud.Publish(ctx, &client.Message{Topic: "gw1/shared/y", Payload: []byte("C1"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			up.waitFor(t, 10*time.Second, "both: local to cloud", has("gw1/shared/x", "L1"))
			local.waitFor(t, 10*time.Second, "both: cloud to local", has("shared/y", "C1"))
			// Markers behind: once they have arrived, any echo would have too.
			if err := pub.Publish(ctx, &client.Message{Topic: "shared/end", Payload: []byte("L2"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if err := cloud.Publish(ctx, &client.Message{Topic: "gw1/shared/end", Payload: []byte("C2"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			up.waitFor(t, 10*time.Second, "marker up", has("gw1/shared/end", "L2"))
			local.waitFor(t, 10*time.Second, "marker down", has("shared/end", "C2"))
			// Round trips through both brokers, so that late copies show.
			if err := pub.Publish(ctx, &client.Message{Topic: "sensors/fence", Payload: []byte("f"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			up.waitFor(t, 10*time.Second, "fence", has("gw1/sensors/fence", "f"))
			if err := cloud.Publish(ctx, &client.Message{Topic: "cloud/gw1/cmd/fence", Payload: []byte("f"), QoS: 1}); err != nil {
				t.Fatal(err)
			}
			local.waitFor(t, 10*time.Second, "fence", has("commands/fence", "f"))

			ups, locals := up.snapshot(), local.snapshot()
			for _, c := range []struct {
				name string
				ms   []*client.Message
				tp   string
			}{
				{"cloud: local message", ups, "gw1/shared/x"},
				{"cloud: its own message", ups, "gw1/shared/y"},
				{"local: its own message", locals, "shared/x"},
				{"local: cloud message", locals, "shared/y"},
			} {
				if n := len(byTopic(c.ms, c.tp)); n != 1 {
					t.Errorf("%s on %s: %d copies, want 1", c.name, c.tp, n)
				}
			}
			st := b.Stats()
			if proto == "3.1.1" && st.LoopsSuppressed == 0 {
				t.Errorf("3.1.1 cloud: no echo suppressed (stats %+v)", st)
			}
			if st.Sent < 6 || st.Received < 3 {
				t.Errorf("stats %+v", st)
			}
			for _, ms := range [][]*client.Message{ups, locals} {
				for _, m := range ms {
					if strings.Contains(m.Topic, "gw1/gw1/") || strings.HasPrefix(m.Topic, "shared/shared/") {
						t.Errorf("looped topic %s", m.Topic)
					}
				}
			}
		})
	}
}

// $SYS/broker/bridge/<name>/state follows the cloud link; counters are
// published beside it.
func TestBridgeSysTopics(t *testing.T) {
	m := startMosquitto(t)
	g := startGateway(t, t.TempDir())
	p := testproxy.New(t, m.Addr())
	b := startBridge(t, g, basicConfig(p.URL()))
	waitState(t, b, "connected", 10*time.Second)
	sys := newRecorder()
	lc := localClient(t, g, "sys-watch")
	if _, err := lc.Subscribe(testCtx(t, 5*time.Second), sys.handle, client.Subscription{Filter: "$SYS/broker/bridge/cloud/#"}); err != nil {
		t.Fatal(err)
	}
	sys.waitFor(t, 5*time.Second, "state connected", has("$SYS/broker/bridge/cloud/state", "connected"))
	sys.waitFor(t, 5*time.Second, "sent counter", func(ms []*client.Message) bool { return len(byTopic(ms, "$SYS/broker/bridge/cloud/sent")) > 0 })
	p.Cut(true)
	sys.waitFor(t, 10*time.Second, "state disconnected", has("$SYS/broker/bridge/cloud/state", "disconnected"))
	p.Restore()
	waitState(t, b, "connected", 10*time.Second)
	if b.Stats().Reconnects < 1 {
		t.Errorf("reconnects %d", b.Stats().Reconnects)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = ctx
}

// A rule removed from the configuration stops queuing at the next start.
func TestRemovedRuleIsUnsubscribed(t *testing.T) {
	m := startMosquitto(t)
	g := startGateway(t, t.TempDir())
	cfg := basicConfig(m.URL())
	cfg.Topics = append(cfg.Topics, Rule{Pattern: "#", LocalPrefix: "old/", RemotePrefix: "gw1/old/"})
	b := startBridge(t, g, cfg)
	if got := g.srv.ClientSubscriptions(b.localID); len(got) != 2 {
		t.Fatalf("subscriptions %v", got)
	}
	stopBridge(t, b)
	cfg.Topics = cfg.Topics[:1]
	b = startBridge(t, g, cfg)
	if got := g.srv.ClientSubscriptions(b.localID); len(got) != 1 || got[0] != "sensors/#" {
		t.Errorf("subscriptions after the rule was removed: %v", got)
	}
}

// An MQTT 5 cloud that announces a Maximum QoS below a rule's QoS (here
// mosquitto with max_qos 1, a qos 2 rule) gets the messages at its maximum,
// readings queued before the first connection included; none is refused.
func TestCloudMaximumQoSCapsRuleQoS(t *testing.T) {
	m := testmosquitto.Start(t, testmosquitto.Options{Config: "allow_anonymous true\nmax_qos 1\n" + logTypes()})
	p := testproxy.New(t, m.Addr())
	g := startGateway(t, t.TempDir())
	up := cloudSubscriber(t, m, "upstream", "gw1/sensors/seq")
	cfg := basicConfig(p.URL())
	cfg.Topics[0].QoS = 2
	p.Cut(true)
	b := startBridge(t, g, cfg)
	pub := localClient(t, g, "sensor")
	publishSeq(t, pub, "sensors/seq", 1, 0, 5)
	p.Restore()
	waitState(t, b, "connected", 10*time.Second)
	publishSeq(t, pub, "sensors/seq", 1, 5, 5)
	got := up.waitFor(t, 10*time.Second, "all readings upstream", arrived(10))
	checkSequence(t, got, 10)
	for _, x := range got {
		if x.QoS != 1 {
			t.Errorf("reading %s arrived at QoS %d, want 1", x.Payload, x.QoS)
		}
	}
	waitQueued(t, b, 0, 10*time.Second)
	if st := b.Stats(); st.Rejected["remote_refused"] != 0 || st.Sent != 10 {
		t.Errorf("sent %d (want 10), rejected %v", st.Sent, st.Rejected)
	}
}
