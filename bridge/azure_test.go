package bridge

import (
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/internal/testenv"
)

// azure-iot-hub against mosquitto standing in for the hub (TLS, anonymous:
// mosquitto cannot check SAS tokens; the token itself is checked against a
// vector in TestAzureSASTokenKnownVector): telemetry goes to
// devices/<id>/messages/events/ with the mapped topic in the property bag, at
// QoS 1 at most, with the retain flag cleared and counted; cloud-to-device
// messages come in by their topic property; the connection is replaced with a
// fresh token before the old one expires, without losing messages.
func TestProfileAzureIoTHub(t *testing.T) {
	m := startMosquittoAuth(t, false)
	g := startGateway(t, t.TempDir())
	hub := cloudSubscriber(t, m, "hub-reader", "devices/dev1/messages/events/#")
	cfg := Config{
		Name: "azure", Profile: ProfileAzure, URL: m.TLSURL(), TLS: TLS{CAFile: m.CAFile},
		ConnectionString: "HostName=127.0.0.1;DeviceId=dev1;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHM=",
		Backoff:          Backoff{Base: 50 * time.Millisecond, Cap: 300 * time.Millisecond},
		Topics: []Rule{
			{Pattern: "#", Direction: DirOut, QoS: 2, LocalPrefix: "sensors/", RemotePrefix: "gw1/"},
			{Pattern: "#", Direction: DirIn, QoS: 1, LocalPrefix: "commands/"},
		},
	}
	local := localSubscriber(t, g, "commands/#")
	b := startRenewing(t, g, cfg)
	if b.RemoteClientID() != "dev1" {
		t.Errorf("client id %q, want the device id", b.RemoteClientID())
	}
	waitState(t, b, "connected", 10*time.Second)
	waitSubscribed(t, b, 10*time.Second)

	pub := localClient(t, g, "sensor")
	ctx := testCtx(t, 20*time.Second)
	if err := pub.Publish(ctx, &client.Message{Topic: "sensors/t/1", Payload: []byte("21"), QoS: 2, Retain: true}); err != nil {
		t.Fatal(err)
	}
	got := hub.waitFor(t, 10*time.Second, "telemetry at the hub", count(1))
	if got[0].Topic != "devices/dev1/messages/events/topic=gw1%2Ft%2F1" || got[0].QoS != 1 || got[0].Retain {
		t.Errorf("at the hub: topic %s QoS %d retain %v", got[0].Topic, got[0].QoS, got[0].Retain)
	}
	if st := b.Stats(); st.RetainCleared != 1 {
		t.Errorf("retain cleared %d, want 1", st.RetainCleared)
	}

	cloud := connect(t, client.Options{URL: m.URL(), ClientID: "hub-sender", CleanStart: true})
	if err := cloud.Publish(ctx, &client.Message{Topic: "devices/dev1/messages/devicebound/%24.to=%2Fdevices%2Fdev1&topic=led", Payload: []byte("on"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	local.waitFor(t, 10*time.Second, "cloud-to-device locally", has("commands/led", "on"))

	// Token renewals happen every 300 ms here; messages keep flowing.
	for b.Stats().Reconnects < 3 {
		time.Sleep(20 * time.Millisecond)
	}
	publishSeq(t, pub, "sensors/seq", 1, 0, 200)
	all := hub.waitFor(t, 20*time.Second, "across renewals", func(ms []*client.Message) bool {
		return arrived(200)(byTopic(ms, "devices/dev1/messages/events/topic=gw1%2Fseq"))
	})
	checkSequence(t, byTopic(all, "devices/dev1/messages/events/topic=gw1%2Fseq"), 200)
}

// A cloud-to-device message whose topic property maps to something that is
// not a topic name (here a wildcard) is acknowledged to the hub and counted
// as rejected invalid: it does not hold a place in the in window while the
// hub sends it again at each reconnection, and the commands after it arrive.
func TestAzureInvalidTopicPropertyRejected(t *testing.T) {
	m := startMosquittoAuth(t, false)
	g := startGateway(t, t.TempDir())
	cfg := Config{
		Name: "azure", Profile: ProfileAzure, URL: m.TLSURL(), TLS: TLS{CAFile: m.CAFile},
		ConnectionString: "HostName=127.0.0.1;DeviceId=dev1;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHM=",
		Backoff:          Backoff{Base: 50 * time.Millisecond, Cap: 300 * time.Millisecond},
		MaxInflight:      2,
		Topics:           []Rule{{Pattern: "#", Direction: DirIn, QoS: 1, LocalPrefix: "commands/"}},
	}
	local := localSubscriber(t, g, "commands/#")
	b := startRenewing(t, g, cfg)
	waitState(t, b, "connected", 10*time.Second)
	waitSubscribed(t, b, 10*time.Second)

	cloud := connect(t, client.Options{URL: m.URL(), ClientID: "hub-sender", CleanStart: true})
	ctx := testCtx(t, 20*time.Second)
	bad := "devices/dev1/messages/devicebound/%24.to=%2Fdevices%2Fdev1&topic=led%2F%23"
	if err := cloud.Publish(ctx, &client.Message{Topic: bad, Payload: []byte("x"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// Reconnections would bring an unacknowledged message again, each time
	// into another place of the window.
	for b.Stats().Reconnects < 4 {
		time.Sleep(20 * time.Millisecond)
	}
	good := "devices/dev1/messages/devicebound/%24.to=%2Fdevices%2Fdev1&topic=led"
	if err := cloud.Publish(ctx, &client.Message{Topic: good, Payload: []byte("on"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	local.waitFor(t, 5*time.Second, "a valid command after an invalid one", has("commands/led", "on"))
	// The valid command leaves the window once the local broker's
	// acknowledgement is back, which may follow its delivery.
	deadline := time.Now().Add(testenv.Scale(5 * time.Second))
	for st := b.Stats(); st.Rejected["invalid"] != 1 || st.InflightIn != 0; st = b.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("rejected %v (want invalid 1), in flight %d", st.Rejected, st.InflightIn)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startRenewing starts a bridge with cfg that renews its SAS token every
// 300 ms, and stops it when the test ends.
func startRenewing(t *testing.T, g *gateway, cfg Config) *Bridge {
	t.Helper()
	b, err := New(cfg, Options{GatewayID: "gw1", Broker: g.srv, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	b.renewEvery = 300 * time.Millisecond
	if err := b.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopBridge(t, b) })
	return b
}
