package bridge

import (
	"bytes"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/client"
	"gatewayd/config"
)

func fieldKeys(err error) []string {
	var keys []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *config.FieldError
		if errors.As(err, &fe) {
			keys = append(keys, fe.Key)
		}
	}
	walk(err)
	return keys
}

func TestConfigValidateNamesEveryBadKey(t *testing.T) {
	cs := Configs{
		{Name: "ok", URL: "mqtts://cloud:8883", Topics: []Rule{{Pattern: "a/#"}}},
		{
			Name: "bad name", URL: "ftp://x", Protocol: "4", Profile: "gcp",
			Queue: Queue{Policy: "lifo", MaxMessages: -1}, MaxInflight: -1,
			Topics: []Rule{{Pattern: "a/#"}, {Pattern: "a/#/b", Direction: "sideways", QoS: 3}},
		},
		{Name: "ok", URL: "mqtt://plain", Profile: ProfileAWSIoT, Topics: []Rule{{}}},
		{Name: "az", Profile: ProfileAzure, Topics: []Rule{{}}},
		{Name: "wide", URL: "mqtts://cloud:8883", Topics: []Rule{{}}, MaxInflight: 65536},
	}
	got := fieldKeys(cs.Validate())
	want := []string{
		"[1].name", "[1].profile", "[1].protocol", "[1].url", "[1].queue.max_messages", "[1].queue.policy",
		"[1].topics[1].direction", "[1].topics[1].qos", "[1].topics[1].pattern",
		"[2].url", "[2].name",
		"[3].connection_string", "[3].url",
		"[1].max_inflight", "[4].max_inflight",
	}
	for _, k := range want {
		if !slices.Contains(got, k) {
			t.Errorf("no error for %s; got %v", k, got)
		}
	}
	if slices.ContainsFunc(got, func(k string) bool { return strings.HasPrefix(k, "[0]") }) {
		t.Errorf("valid bridge [0] reported: %v", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	g := startGateway(t, t.TempDir())
	b, err := New(Config{Name: "up", URL: "mqtts://a.example:443", Profile: ProfileAWSIoT,
		Topics: []Rule{{Pattern: "t/#", QoS: 2, RemotePrefix: "dt/"}}}, Options{GatewayID: "gw7", Broker: g.srv, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if b.remoteID != "gw7-up" {
		t.Errorf("client id %q, want gw7-up", b.remoteID)
	}
	if b.statusTopic != "dt/gw7/status" {
		t.Errorf("status topic %q", b.statusTopic)
	}
	if b.rules[0].qos != 1 {
		t.Errorf("aws-iot QoS 2 rule not capped to 1: %d", b.rules[0].qos)
	}
	if !slices.Equal(b.tlsCfg.NextProtos, []string{"x-amzn-mqtt-ca"}) {
		t.Errorf("aws-iot on 443: ALPN %v", b.tlsCfg.NextProtos)
	}
	if b.window != DefaultMaxInflight {
		t.Errorf("window %d, want %d with MQTT 5", b.window, DefaultMaxInflight)
	}
	for _, c := range []struct {
		proto string
		set   int
		want  int
	}{{"3.1.1", 0, DefaultMaxInflight311}, {"5", 0, DefaultMaxInflight}, {"3.1.1", 100, 100}, {"5", 1, 1}} {
		cfg := Config{Protocol: c.proto, MaxInflight: c.set}
		if got := cfg.window(); got != c.want {
			t.Errorf("protocol %s, max_inflight %d: window %d, want %d", c.proto, c.set, got, c.want)
		}
	}
	p := b.policy()
	if p.MaxQueuedMessages != DefaultMaxMessages || p.MaxQueuedBytes != DefaultMaxBytes || !p.DropOldest || !p.UpgradeQoS {
		t.Errorf("policy %+v", p)
	}
}

// azure-iot-hub speaks MQTT 3.1.1 whatever protocol says: a SAS token given as
// password without a username is refused by Validate and by New, not left
// to fail in the background at every connection attempt.
func TestAzurePasswordWithoutUsernameRefused(t *testing.T) {
	g := startGateway(t, t.TempDir())
	cfg := Config{Name: "az", Profile: ProfileAzure, URL: "mqtts://hub.example:8883",
		Password: "SharedAccessSignature sr=x&sig=y&se=1",
		Topics:   []Rule{{Pattern: "#", QoS: 1, LocalPrefix: "sensors/"}}}
	if keys := fieldKeys(cfg.Validate()); !slices.Contains(keys, "password") {
		t.Errorf("Validate: keys %v, want password", keys)
	}
	if _, err := New(cfg, Options{GatewayID: "gw1", Broker: g.srv, Logger: quietLog()}); err == nil {
		t.Errorf("New accepted a 3.1.1 password without a username")
	}
	cfg.Username = "hub.example/dev1/?api-version=2021-04-12"
	if err := cfg.Validate(); err != nil {
		t.Errorf("with a username: %v", err)
	}
	if _, err := New(cfg, Options{GatewayID: "gw1", Broker: g.srv, Logger: quietLog()}); err != nil {
		t.Errorf("New with a username: %v", err)
	}
}

// The SAS token follows Azure's documented algorithm; the expected signature
// is computed here by openssl, independently of the Go code.
func TestAzureSASTokenKnownVector(t *testing.T) {
	const connStr = "HostName=myhub.azure-devices.net;DeviceId=sensor-01;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHM="
	cs, err := ParseConnectionString(connStr)
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.Username(); got != "myhub.azure-devices.net/sensor-01/?api-version=2021-04-12" {
		t.Errorf("username %q", got)
	}
	expiry := time.Unix(1700000000, 0)
	tok := cs.SASToken(expiry)
	const sr = "myhub.azure-devices.net%2Fdevices%2Fsensor-01"
	const wantSig = "BKgLJoWc2xvVuTjjhmA+TuOUKpUGQhpzwHn6H2o3RfU="
	want := "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(wantSig) + "&se=1700000000"
	if tok != want {
		t.Errorf("token\n%s\nwant\n%s", tok, want)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		cmd := exec.Command("sh", "-c", `printf '%s\n%s' "$SR" "$SE" | openssl dgst -sha256 -mac HMAC -macopt hexkey:"$KEY" -binary | base64`)
		cmd.Env = append(cmd.Environ(), "SR="+sr, "SE=1700000000", "KEY="+hex.EncodeToString([]byte("secret-key-for-tests")))
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); got != wantSig {
			t.Errorf("openssl says %s, the vector says %s", got, wantSig)
		}
	}
}

func TestAzureTopics(t *testing.T) {
	if got := azureEventsTopic("d1", "gw/temp 1"); got != "devices/d1/messages/events/topic=gw%2Ftemp+1" {
		t.Errorf("events topic %q", got)
	}
	if got := azureInboundTopic("d1", "devices/d1/messages/devicebound/%24.to=%2Fdevices%2Fd1&topic=cmd%2Fled"); got != "cmd/led" {
		t.Errorf("inbound with topic property: %q", got)
	}
	if got := azureInboundTopic("d1", "devices/d1/messages/devicebound/%24.to=%2Fdevices%2Fd1"); got != "devicebound" {
		t.Errorf("inbound without topic property: %q", got)
	}
}

func TestTopicMapping(t *testing.T) {
	r := &rule{Rule: Rule{LocalPrefix: "sensors/", RemotePrefix: "gw1/up/"}}
	if got := r.toRemote("sensors/t/1"); got != "gw1/up/t/1" {
		t.Errorf("toRemote %q", got)
	}
	if got := r.toLocal("gw1/up/t/1"); got != "sensors/t/1" {
		t.Errorf("toLocal %q", got)
	}
	for _, c := range []struct {
		f, t string
		ok   bool
	}{{"a/#", "a", true}, {"a/+/c", "a/b/c", true}, {"#", "$SYS/x", false}, {"a/+", "a/b/c", false}} {
		if client.MatchTopic(c.f, c.t) != c.ok {
			t.Errorf("client.MatchTopic(%q, %q) != %v", c.f, c.t, c.ok)
		}
	}
}

// An MQTT 3.1.1 bridge with a QoS 2 out rule and a window above what
// Mosquitto takes by default is warned about at start: such a cloud
// acknowledges and drops what comes beyond its limit.
func TestWindowAbove311LimitWarned(t *testing.T) {
	g := startGateway(t, t.TempDir())
	for _, c := range []struct {
		window int
		qos    byte
		warned bool
	}{{64, 2, true}, {64, 1, false}, {0, 2, false}, {20, 2, false}} {
		var log bytes.Buffer
		_, err := New(Config{Name: "up", URL: "mqtt://cloud:1883", Protocol: "3.1.1", MaxInflight: c.window,
			Topics: []Rule{{Pattern: "#", QoS: c.qos}}}, Options{GatewayID: "gw", Broker: g.srv, Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(log.String(), "no flow control"); got != c.warned {
			t.Errorf("max_inflight %d, QoS %d: warned %v, want %v (log %q)", c.window, c.qos, got, c.warned, log.String())
		}
	}
}
