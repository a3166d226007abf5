package bridge

import (
	"os"
	"strconv"
	"testing"
	"time"

	"gatewayd/broker"
	"gatewayd/broker/client"
	"gatewayd/internal/testenv"
	"gatewayd/internal/testmosquitto"
	"gatewayd/internal/testproxy"
)

// outageSize is N messages published during an outage of about d.
func outageSize() (n int, d time.Duration) {
	if *full {
		return 10000, 60 * time.Second
	}
	if os.Getenv("BRIDGE_N") != "" {
		n, _ := strconv.Atoi(os.Getenv("BRIDGE_N"))
		return n, 3 * time.Second
	}
	return 2000, 3 * time.Second
}

// Messages published locally while the uplink is down all arrive upstream,
// in order, none lost (repeats only as QoS 1 redeliveries), whatever the
// outage: a cut link, a black-holed link (only the keepalive can tell), a
// restart of the cloud broker, a restart of the gateway's broker with the
// messages in its durable store.
func TestOutageNothingLost(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, e *outageEnv)
	}{
		{"link cut", func(t *testing.T, e *outageEnv) {
			e.p.Cut(true)
			waitState(t, e.b, "disconnected", 10*time.Second)
			e.publishDuringOutage(t)
			e.p.Restore()
		}},
		{"link black-holed", func(t *testing.T, e *outageEnv) {
			e.p.BlackHole()
			e.publishDuringOutage(t)
			// Nothing closed the connection: the keepalive must find out.
			waitLost(t, e.b, 30*time.Second)
			if e.b.Stats().Sent != e.sentBefore {
				t.Errorf("sent %d during a black hole", e.b.Stats().Sent-e.sentBefore)
			}
			e.p.Restore()
		}},
		{"cloud broker restarted", func(t *testing.T, e *outageEnv) {
			// What arrived upstream is judged by a subscriber whose session
			// is offline during the restart: mosquitto holds the messages
			// queued and saves them, rather than having them in flight to
			// an online subscriber, which mosquitto 2.0 can lose across its
			// own restart (eclipse-mosquitto/mosquitto#2811): that would be
			// no fault of the bridge.
			off := cloudSubscriber(t, e.m, "upstream-offline", "gw1/sensors/seq")
			off.offline(t)
			e.p.Cut(true)
			e.publishDuringOutage(t)
			e.p.Restore()
			// Restart mosquitto in the middle of the drain.
			e.up.waitFor(t, 60*time.Second, "a quarter drained", arrived(e.n/4))
			e.m.Restart()
			waitQueued(t, e.b, 0, 120*time.Second)
			off.online(t)
			e.up = off
		}},
		{"gateway broker restarted", func(t *testing.T, e *outageEnv) {
			e.p.Cut(true)
			e.publishDuringOutage(t)
			queued := e.b.Stats().QueuedMessages
			if queued != e.n {
				t.Errorf("queued %d before the restart, want %d", queued, e.n)
			}
			stopBridge(t, e.b)
			e.g.shutdown()
			e.g = startGateway(t, e.dir)
			e.b = startBridge(t, e.g, e.cfg)
			if q := e.b.Stats().QueuedMessages; q != queued {
				t.Errorf("queued %d after the restart, want %d", q, queued)
			}
			e.p.Restore()
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newOutageEnv(t)
			c.run(t, e)
			got := e.up.waitFor(t, 120*time.Second, "all arrived upstream", arrived(e.n))
			dups := checkSequence(t, got, e.n)
			waitQueued(t, e.b, 0, 10*time.Second)
			st := e.b.Stats()
			t.Logf("%d messages, %d repeated, stats %+v", e.n, dups, st)
			for k, v := range st.Dropped {
				if v != 0 {
					t.Errorf("dropped %s: %d", k, v)
				}
			}
		})
	}
}

type outageEnv struct {
	m          *testmosquitto.Broker
	p          *testproxy.Proxy
	dir        string
	g          *gateway
	b          *Bridge
	cfg        Config
	up         *recorder
	pub        *client.Client
	n          int
	outage     time.Duration
	sentBefore uint64
}

func newOutageEnv(t *testing.T) *outageEnv {
	e := &outageEnv{m: startMosquitto(t), dir: t.TempDir()}
	e.n, e.outage = outageSize()
	e.p = testproxy.New(t, e.m.Addr())
	e.g = startGateway(t, e.dir)
	e.up = cloudSubscriber(t, e.m, "upstream", "gw1/sensors/seq", "gw1/sensors/q0")
	e.cfg = basicConfig(e.p.URL())
	e.b = startBridge(t, e.g, e.cfg)
	waitState(t, e.b, "connected", 10*time.Second)
	e.pub = localClient(t, e.g, "sensor")
	return e
}

// publishDuringOutage publishes N sequenced messages spread over the outage.
func (e *outageEnv) publishDuringOutage(t *testing.T) {
	e.sentBefore = e.b.Stats().Sent
	const batches = 10
	per := e.n / batches
	for i := 0; i < batches; i++ {
		publishSeq(t, e.pub, "sensors/seq", 1, i*per, per)
		time.Sleep(e.outage / batches)
	}
}

// QoS 0 readings matching a bridge rule are queued durably too: they arrive
// after an outage (the bridge's session upgrades them to QoS 1).
func TestOutageQoS0ReadingsQueued(t *testing.T) {
	e := newOutageEnv(t)
	e.p.Cut(true)
	waitState(t, e.b, "disconnected", 10*time.Second)
	const n = 200
	for i := range n {
		if err := e.pub.Publish(testCtx(t, 5*time.Second), &client.Message{Topic: "sensors/q0", Payload: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	waitQueued(t, e.b, n, 10*time.Second)
	e.p.Restore()
	got := e.up.waitFor(t, 30*time.Second, "QoS 0 readings upstream", arrived(n))
	checkSequence(t, got, n)
}

// When the link fails after the cloud accepted the connection but before
// it had the bridge's subscription, the cloud resumes the bridge's session
// at the next connection without that subscription: the bridge subscribes
// again, and cloud messages reach the local broker.
func TestOutageSubscriptionLostWithLink(t *testing.T) {
	for _, proto := range []string{"5", "3.1.1"} {
		t.Run("protocol "+proto, func(t *testing.T) {
			m := startMosquitto(t)
			p := testproxy.New(t, m.Addr())
			p.DropSubscribes(1)
			g := startGateway(t, t.TempDir())
			cfg := basicConfig(p.URL())
			cfg.Protocol = proto
			cfg.Topics = []Rule{{Pattern: "#", Direction: DirIn, QoS: 1, LocalPrefix: "commands/", RemotePrefix: "cloud/cmd/"}}
			local := localSubscriber(t, g, "commands/#")
			b := startBridge(t, g, cfg)
			deadline := time.Now().Add(testenv.Scale(10 * time.Second))
			for st := b.Stats(); st.State != "connected" || st.Reconnects == 0; st = b.Stats() {
				if time.Now().After(deadline) {
					t.Fatalf("bridge state %s after %d reconnections, want connected again", st.State, st.Reconnects)
				}
				time.Sleep(10 * time.Millisecond)
			}
			// mosquitto drops what matches no subscription: publish until
			// one arrives.
			cloud := connect(t, client.Options{URL: m.URL(), ClientID: "cloud-app", Username: cloudUser, Password: cloudPass, CleanStart: true})
			wait := testenv.Scale(20 * time.Second)
			deadline = time.Now().Add(wait)
			for i := 0; len(local.snapshot()) == 0; i++ {
				if time.Now().After(deadline) {
					t.Fatalf("no cloud message reached the local broker in %v (%d published)", wait, i)
				}
				if err := cloud.Publish(testCtx(t, 5*time.Second), &client.Message{Topic: "cloud/cmd/probe", Payload: []byte(strconv.Itoa(i)), QoS: 1}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if got := local.snapshot()[0].Topic; got != "commands/probe" {
				t.Errorf("arrived on %q, want commands/probe", got)
			}
		})
	}
}

// The bridge's local session holds the outage's backlog: it outlives a stop
// of the bridge (a reload) and of the gateway whatever
// broker.max_session_expiry says, even 0, or a cap shorter than the time the
// gateway stayed off (here 2 s standing in for days).
func TestOutageQueueOutlivesMaxSessionExpiry(t *testing.T) {
	for _, c := range []struct {
		name string
		cap  time.Duration
		off  time.Duration // gateway off for this long; 0: only the bridge restarts
	}{{"max_session_expiry 0, bridge reload", 0, 0}, {"gateway off longer than max_session_expiry", 2 * time.Second, 3 * time.Second}} {
		t.Run(c.name, func(t *testing.T) {
			m := startMosquitto(t)
			p := testproxy.New(t, m.Addr())
			dir := t.TempDir()
			capExpiry := func(bc *broker.Config) { bc.MaxSessionExpiry = c.cap }
			g := startGatewayWith(t, dir, capExpiry)
			up := cloudSubscriber(t, m, "upstream", "gw1/sensors/seq")
			cfg := basicConfig(p.URL())
			outageBacklog(t, g, p, cfg, 50)
			if c.off > 0 {
				g.shutdown()
				time.Sleep(c.off)
				g = startGatewayWith(t, dir, capExpiry)
			}
			b := startBridge(t, g, cfg)
			if n := b.Stats().QueuedMessages; n != 50 {
				t.Errorf("queued %d after the restart, want 50", n)
			}
			p.Restore()
			got := up.waitFor(t, 10*time.Second, "the outage's readings upstream", arrived(50))
			checkSequence(t, got, 50)
		})
	}
}

// A bridge taken out of the configuration: EndRemoved ends its local session
// and drops the queue it held; the session of a configured bridge stays.
func TestEndRemovedDropsARemovedBridgesQueue(t *testing.T) {
	m := startMosquitto(t)
	p := testproxy.New(t, m.Addr())
	g := startGateway(t, t.TempDir())
	cfg := basicConfig(p.URL())
	outageBacklog(t, g, p, cfg, 20)
	id := "gatewayd-bridge-" + cfg.Name
	if got := EndRemoved(g.srv, []string{cfg.Name}); len(got) != 0 {
		t.Fatalf("ended %v while the bridge is configured", got)
	}
	if q, ok := g.srv.ClientQueue(id); !ok || q.Messages != 20 {
		t.Fatalf("queue of the configured bridge: %+v (found %v), want 20 messages", q, ok)
	}
	if got := EndRemoved(g.srv, []string{"other"}); len(got) != 1 || got[0] != (Removed{Name: cfg.Name, Messages: 20}) {
		t.Fatalf("EndRemoved ended %+v, want %s with its 20 messages", got, cfg.Name)
	}
	if ids := g.srv.SessionIDs("gatewayd-bridge-"); len(ids) != 0 {
		t.Fatalf("sessions left: %v", ids)
	}
	if q := g.srv.Stats().Queued; q != 0 {
		t.Fatalf("%d messages still queued", q)
	}
}

// outageBacklog runs a bridge with cfg until it is connected, cuts its link
// at p, publishes n readings on sensors/seq that it queues, and stops it:
// its local session holds them.
func outageBacklog(t *testing.T, g *gateway, p *testproxy.Proxy, cfg Config, n int) {
	t.Helper()
	b := startBridge(t, g, cfg)
	waitState(t, b, "connected", 10*time.Second)
	pub := localClient(t, g, "sensor")
	p.Cut(true)
	waitLost(t, b, 10*time.Second)
	publishSeq(t, pub, "sensors/seq", 1, 0, n)
	waitQueued(t, b, n, 10*time.Second)
	stopBridge(t, b)
}
