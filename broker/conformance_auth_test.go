package broker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	mqttpackets "github.com/eclipse/paho.mqtt.golang/packets"

	"gatewayd/broker"
	"gatewayd/broker/packet"
)

// passwords is an Authenticator with a fixed user table.
type passwords struct {
	mu    sync.Mutex
	users map[string]string
	seen  []broker.ConnectInfo
}

func (p *passwords) Authenticate(_ context.Context, ci *broker.ConnectInfo) packet.ReasonCode {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, *ci)
	if want, ok := p.users[ci.Username]; ok && ci.PasswordSet && string(ci.Password) == want {
		return packet.Success
	}
	return packet.BadUserNameOrPassword
}

// prefixACL denies publishing, subscribing and reading by topic prefix.
type prefixACL struct {
	denyPublish   string
	denySubscribe string
	denyRead      string // only for clients whose id starts with readerPrefix
	readerPrefix  string
}

func (a prefixACL) CanPublish(_ *broker.ConnectInfo, topic string) bool {
	return a.denyPublish == "" || !strings.HasPrefix(topic, a.denyPublish)
}

func (a prefixACL) CanSubscribe(_ *broker.ConnectInfo, filter string) bool {
	return a.denySubscribe == "" || !strings.HasPrefix(filter, a.denySubscribe)
}

func (a prefixACL) CanRead(ci *broker.ConnectInfo, topic string) bool {
	if a.denyRead == "" || !strings.HasPrefix(ci.ClientID, a.readerPrefix) {
		return true
	}
	return !strings.HasPrefix(topic, a.denyRead)
}

// An Authenticator refusing the credentials makes the broker refuse the
// connection: v5 CONNACK 0x86 Bad User Name or Password, 3.1.1 and 3.1
// return code 0x04 (or 0x05 not authorized); good credentials connect, and
// the Authenticator sees what the client sent.
func TestConformanceAuthenticatorRefusesBadCredentials(t *testing.T) {
	auth := &passwords{users: map[string]string{"sensor": "s3cret"}}
	b := startBroker(t, nil, broker.Options{Auth: auth})

	t.Run("v5 bad password", func(t *testing.T) {
		_, ca, err := connectV5(t, b, &paho.Connect{ClientID: "auth5", CleanStart: true, KeepAlive: 30,
			Username: "sensor", UsernameFlag: true, Password: []byte("wrong"), PasswordFlag: true}, nil)
		if err == nil {
			t.Fatalf("paho.golang connected with a wrong password; want CONNACK 0x86")
		}
		if ca == nil || ca.ReasonCode != 0x86 {
			t.Fatalf("CONNACK %+v, want reason 0x86 Bad User Name or Password", ca)
		}
	})
	t.Run("v5 good password", func(t *testing.T) {
		_, ca, err := connectV5(t, b, &paho.Connect{ClientID: "auth5ok", CleanStart: true, KeepAlive: 30,
			Username: "sensor", UsernameFlag: true, Password: []byte("s3cret"), PasswordFlag: true}, nil)
		if err != nil {
			t.Fatalf("good credentials refused: %v (CONNACK %+v)", err, ca)
		}
	})
	for _, level := range []uint{3, 4} {
		opts := v3Options(b, "auth3", level, true).SetUsername("sensor").SetPassword("wrong")
		_, tok := connectV3(t, opts)
		err := tok.Error()
		if err == nil {
			t.Errorf("level %d: paho.mqtt.golang connected with a wrong password", level)
		} else if !errors.Is(err, mqttpackets.ErrorRefusedBadUsernameOrPassword) && !errors.Is(err, mqttpackets.ErrorRefusedNotAuthorised) {
			t.Errorf("level %d: CONNECT error %q (return code %d), want refused: bad user name or password (0x04) or not authorized (0x05)", level, err, tok.ReturnCode())
		}
		good := v3Options(b, "auth3ok", level, true).SetUsername("sensor").SetPassword("s3cret")
		c, tok := connectV3(t, good)
		if err := tok.Error(); err != nil {
			t.Errorf("level %d: good credentials refused: %v", level, err)
		} else {
			c.Disconnect(100)
		}
	}
	t.Run("raw 3.1.1 return code", func(t *testing.T) {
		c := dialRaw(t, b, "raw bad password")
		c.send(connectPacket(connectSpec{Version: 4, ClientID: "authraw", Clean: true, KeepAlive: 30, Username: strp("sensor"), Password: strp("nope")}))
		got := c.waitClosed("CONNECT with bad password")
		if len(got) != 1 || got[0].Type != tCONNACK || (string(got[0].Body) != "\x00\x04" && string(got[0].Body) != "\x00\x05") {
			t.Fatalf("got %s then close, want CONNACK [00 04] (or [00 05]) then close", describePackets(got))
		}
	})

	auth.mu.Lock()
	defer auth.mu.Unlock()
	found := false
	for _, ci := range auth.seen {
		if ci.ClientID == "auth5ok" {
			found = true
			if ci.Username != "sensor" || string(ci.Password) != "s3cret" || ci.Version != packet.V5 {
				t.Errorf("Authenticator saw %+v, want client auth5ok, user sensor, password s3cret, version 5", ci)
			}
		}
	}
	if !found {
		t.Errorf("Authenticator was never asked about client auth5ok")
	}
}

// A PUBLISH the Authorizer denies is not delivered; a v5 QoS 1 publisher gets
// PUBACK 0x87 Not authorized (section 3.4.2.1).
func TestConformanceAuthorizerDeniesPublish(t *testing.T) {
	b := startBroker(t, nil, broker.Options{ACL: prefixACL{denyPublish: "secret/"}})
	sub := dialV3(t, b, "watcher", 4, true)
	sub.sub(t, "#", 1)

	p5, _ := dialV5(t, b, &paho.Connect{ClientID: "pub5", CleanStart: true})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pr, _ := p5.Publish(ctx, &paho.Publish{Topic: "secret/v5", QoS: 1, Payload: []byte("denied-v5")})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Errorf("v5 QoS 1 PUBLISH to a denied topic: PUBACK %+v, want reason 0x87 Not authorized", pr)
	}
	p5.pub(t, &paho.Publish{Topic: "secret/v5", QoS: 0, Payload: []byte("denied-v5-qos0")})

	// 3.1.1 has no way to say "not authorized": the broker must either
	// acknowledge normally (PUBACK 40 02 <id>) or close the connection
	// [MQTT-3.3.5-2].
	raw := dialRaw(t, b, "3.1.1 publisher")
	raw.connect(connectSpec{Version: 4, ClientID: "pub3raw", Clean: true, KeepAlive: 30})
	raw.send(publishPacket(false, pubSpec{Topic: "secret/v3", Payload: "denied-v3", QoS: 1, ID: 9}))
	switch p, err := raw.next(waitTimeout); {
	case err == nil && (p.Type != tPUBACK || string(p.Body) != "\x00\x09"):
		t.Errorf("3.1.1 QoS 1 PUBLISH to a denied topic answered with %v, want PUBACK [40 02 00 09] or the connection closed [MQTT-3.3.5-2]", p)
	case isTimeout(err):
		t.Errorf("3.1.1 QoS 1 PUBLISH to a denied topic: no PUBACK and the connection left open for %v; want PUBACK [40 02 00 09] or the connection closed [MQTT-3.3.5-2]", waitTimeout)
	}

	p3 := dialV3(t, b, "pub3", 4, true)
	p3.pub(t, "secret/v3", 0, false, "denied-v3-qos0")
	p3.pub(t, "public/v3", 1, false, "allowed")
	sub.in.waitPayload(t, "allowed")
	for _, m := range sub.in.all() {
		if strings.HasPrefix(m.Topic, "secret/") {
			t.Errorf("subscriber received %v although publishing to secret/ is denied", m)
		}
	}
}

// A filter the Authorizer denies is refused in SUBACK: 0x87 in v5, 0x80 in
// 3.1.1 [MQTT-3.9.3-1], and nothing is delivered through it.
func TestConformanceAuthorizerDeniesSubscribe(t *testing.T) {
	b := startBroker(t, nil, broker.Options{ACL: prefixACL{denySubscribe: "secret/"}})
	c5, _ := dialV5(t, b, &paho.Connect{ClientID: "sub5", CleanStart: true})
	sa := c5.sub(t, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "secret/#", QoS: 1}, {Topic: "public/#", QoS: 1}}})
	if len(sa.Reasons) != 2 || sa.Reasons[0] != 0x87 || sa.Reasons[1] != 0x01 {
		t.Errorf("v5 SUBACK reasons % x, want [87 01] (denied filter Not authorized, the other granted QoS 1)", sa.Reasons)
	}

	c3 := dialV3(t, b, "sub3", 4, true)
	tok := c3.SubscribeMultiple(map[string]byte{"secret/#": 1, "public/#": 1}, nil)
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatalf("v3 SUBSCRIBE not answered")
	}
	res := tok.(interface{ Result() map[string]byte }).Result()
	if res["secret/#"] != 0x80 || res["public/#"] != 1 {
		t.Errorf("3.1.1 SUBACK secret/# = %s, public/# = %s; want 0x80 (failure) and 0x01", reasonHex(res["secret/#"]), reasonHex(res["public/#"]))
	}

	pub := dialV3(t, b, "pub", 4, true)
	pub.pub(t, "secret/x", 1, false, "secret")
	pub.pub(t, "public/x", 1, false, "public")
	c5.in.waitPayload(t, "public")
	c3.in.waitPayload(t, "public")
	if len(c5.in.withPayload("secret")) != 0 || len(c3.in.withPayload("secret")) != 0 {
		t.Errorf("a message on secret/x was delivered through a denied subscription")
	}
}

// CanRead is checked on delivery: a client subscribed to '#' does not
// receive topics it may not read, while others do.
func TestConformanceAuthorizerCanReadFiltersDelivery(t *testing.T) {
	b := startBroker(t, nil, broker.Options{ACL: prefixACL{denyRead: "private/", readerPrefix: "guest"}})
	guest := dialV3(t, b, "guest-1", 4, true)
	guest.sub(t, "#", 1)
	owner := dialV3(t, b, "owner", 4, true)
	owner.sub(t, "#", 1)
	guest5, _ := dialV5(t, b, &paho.Connect{ClientID: "guest-5", CleanStart: true})
	guest5.sub1(t, "#", 1)

	owner.pub(t, "private/data", 1, false, "private")
	owner.pub(t, "public/data", 1, false, "public")
	owner.in.waitPayload(t, "private")
	guest.in.waitPayload(t, "public")
	guest5.in.waitPayload(t, "public")
	if got := guest.in.withPayload("private"); len(got) != 0 {
		t.Errorf("3.1.1 client denied reading private/ received %v", got)
	}
	if got := guest5.in.withPayload("private"); len(got) != 0 {
		t.Errorf("v5 client denied reading private/ received %v", got)
	}
}

// MQTT 5.0 allows a password without a user name (section 3.1.2.9); 3.1.1
// does not [MQTT-3.1.2-22] (covered by the malformed CONNECT table).
func TestConformancePasswordWithoutUsernameV5(t *testing.T) {
	auth := &passwords{users: map[string]string{"": "token-only"}}
	b := startBroker(t, nil, broker.Options{Auth: auth})
	c := dialRaw(t, b, "password only")
	ca := c.connectAny(connectSpec{Version: 5, ClientID: "token", Clean: true, KeepAlive: 30, Password: strp("token-only")})
	if ca.Code != 0 {
		t.Fatalf("v5 CONNECT with a password and no user name: CONNACK %s, want 0x00 (the Authenticator accepts it)", reasonHex(ca.Code))
	}
	auth.mu.Lock()
	defer auth.mu.Unlock()
	if n := len(auth.seen); n != 1 || !auth.seen[0].PasswordSet || string(auth.seen[0].Password) != "token-only" || auth.seen[0].Username != "" {
		t.Errorf("Authenticator saw %+v, want one client with no user name and password token-only", auth.seen)
	}
}

// CanRead also guards retained messages sent on subscribe and wills: a
// client may not learn a topic it may not read through either.
func TestConformanceAuthorizerCanReadGuardsRetainedAndWills(t *testing.T) {
	b := startBroker(t, nil, broker.Options{ACL: prefixACL{denyRead: "private/", readerPrefix: "guest"}})
	owner := dialV3(t, b, "owner", 4, true)
	owner.pub(t, "private/config", 1, true, "retained secret")
	owner.pub(t, "public/config", 1, true, "retained public")

	guest := dialV3(t, b, "guest-3", 4, true)
	guest.sub(t, "#", 1)
	guest5, _ := dialV5(t, b, &paho.Connect{ClientID: "guest-5", CleanStart: true})
	guest5.sub1(t, "#", 1)
	guest.in.waitPayload(t, "retained public")
	guest5.in.waitPayload(t, "retained public")

	owner.sub(t, "private/device/status", 1)
	dying := dialRaw(t, b, "device with a private will")
	dying.connect(connectSpec{Version: 4, ClientID: "device", Clean: true, KeepAlive: 30,
		Will: &willSpec{Topic: "private/device/status", Payload: "will secret", QoS: 1}})
	dying.close()
	owner.in.waitPayload(t, "will secret")
	owner.pub(t, "public/fence", 1, false, "fence")
	guest.in.waitPayload(t, "fence")
	guest5.in.waitPayload(t, "fence")
	for name, in := range map[string]*inbox{"3.1.1 guest": guest.in, "v5 guest": guest5.in} {
		for _, m := range in.all() {
			if strings.HasPrefix(m.Topic, "private/") {
				t.Errorf("%s denied reading private/ received %v", name, m)
			}
		}
	}
}
