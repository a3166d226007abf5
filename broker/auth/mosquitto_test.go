package auth

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/internal/testenv"
	"gatewayd/internal/testmosquitto"
)

// The tests in this file give the same password and ACL files to a real
// mosquitto and to this package, and check that both decide alike.

// wait bounds every wait for mosquitto or a client; stretched under
// qemu-user (make test-arm) by testenv.Scale.
var wait = testenv.Scale(10 * time.Second)

// startMosquitto runs mosquitto -v on a free loopback port with the given
// extra configuration (which names files in dir) and returns its address.
func startMosquitto(t *testing.T, dir, extra string) string {
	t.Helper()
	return testmosquitto.Start(t, testmosquitto.Options{Dir: dir, Config: extra, Verbose: true}).Addr()
}

// connect connects an MQTT 5.0 client and returns it with the CONNACK reason.
// Topics of messages received are sent to received, if not nil.
func connect(t *testing.T, addr, clientID, user, password string, received chan<- string) (*paho.Client, byte) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := paho.ClientConfig{Conn: nc, PacketTimeout: wait}
	if received != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			received <- pr.Packet.Topic
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: clientID, KeepAlive: 30, CleanStart: true}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if ca == nil {
		nc.Close()
		t.Fatalf("connect %s: %v", clientID, err)
	}
	if ca.ReasonCode != 0 {
		nc.Close()
		return nil, ca.ReasonCode
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, 0
}

func TestMosquittoAgreesOnPasswords(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "a-pass")
	mosquittoPasswd(t, "-H", "sha512", "-b", path, "bob", "b-pass")
	addr := startMosquitto(t, dir, "allow_anonymous false\npassword_file "+path+"\n")
	p := load(t, path)
	for i, c := range []struct{ user, password string }{
		{"alice", "a-pass"}, {"alice", "b-pass"}, {"bob", "b-pass"}, {"bob", "B-pass"}, {"carol", "a-pass"},
	} {
		_, reason := connect(t, addr, fmt.Sprintf("c%d", i), c.user, c.password, nil)
		if mine, theirs := p.Check(c.user, []byte(c.password)), reason == 0; mine != theirs {
			t.Errorf("%s/%s: Check = %v, mosquitto accepted = %v (reason %#x)", c.user, c.password, mine, theirs, reason)
		}
	}
}

func TestMosquittoAgreesOnACL(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	mosquittoPasswd(t, "-c", "-b", passwd, "alice", "a")
	mosquittoPasswd(t, "-b", passwd, "bob", "b")
	mosquittoPasswd(t, "-b", passwd, "carol", "c")
	mosquittoPasswd(t, "-b", passwd, "admin", "x")
	// Deny lines stand before and after the rules they cut into: in both
	// brokers deny wins wherever it stands.
	aclPath := filepath.Join(dir, "acl")
	writeFile(t, aclPath, `# anonymous
topic deny public/secret
topic read public/#
topic write public/anon/in

user alice
topic readwrite sensors/#
topic deny sensors/vault/#
topic write actuators/+/set

user bob
topic read sensors/bob/#

user admin
topic write #

pattern readwrite devices/%c/#
pattern deny devices/%c/firmware
pattern read users/%u/#
pattern read end/%c
`)
	addr := startMosquitto(t, dir, "allow_anonymous true\npassword_file "+passwd+"\nacl_file "+aclPath+"\n")
	a, err := LoadACLFile(aclPath)
	if err != nil {
		t.Fatal(err)
	}
	admin, reason := connect(t, addr, "admin", "admin", "x", nil)
	if reason != 0 {
		t.Fatalf("admin: connect refused %#x", reason)
	}
	publish := func(c *paho.Client, topic string) byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		pr, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
		if pr == nil {
			t.Fatalf("publish %s: %v", topic, err)
		}
		return pr.ReasonCode
	}

	identities := []struct{ user, password, clientID string }{
		{"", "", "anon-1"}, {"alice", "a", "pump-1"}, {"bob", "b", "dev-2"}, {"carol", "c", "c3"},
	}
	decided := map[bool]int{}
	for _, id := range identities {
		topics := []string{
			"public/news", "public/secret", "public/anon/in", "sensors/kitchen/temp", "sensors/vault/key",
			"sensors/bob/temp", "actuators/valve/set", "devices/" + id.clientID + "/state",
			"devices/" + id.clientID + "/firmware", "devices/other/state", "users/alice/x", "users/bob/x", "other",
		}
		received := make(chan string, len(topics)+1)
		c, reason := connect(t, addr, id.clientID, id.user, id.password, received)
		if reason != 0 {
			t.Fatalf("%s: connect refused %#x", id.user, reason)
		}

		// Write: mosquitto answers a refused QoS 1 PUBLISH with PUBACK 0x87.
		for _, topic := range topics {
			theirs := publish(c, topic) < 0x80
			if mine := a.Allowed(id.user, id.clientID, topic, Write); mine != theirs {
				t.Errorf("user %q client %q publish %q: Allowed = %v, mosquitto = %v", id.user, id.clientID, topic, mine, theirs)
			}
			decided[theirs]++
		}

		// Read: mosquitto 2.0 accepts every SUBSCRIBE and checks read access
		// on delivery, so subscribe to everything and see what arrives
		// before the end marker.
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		_, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#", QoS: 1}}})
		cancel()
		if err != nil {
			t.Fatalf("subscribe #: %v", err)
		}
		for _, topic := range topics {
			publish(admin, topic)
		}
		end := "end/" + id.clientID
		publish(admin, end)
		delivered := map[string]bool{}
	collect:
		for {
			select {
			case topic := <-received:
				if topic == end {
					break collect
				}
				delivered[topic] = true
			case <-time.After(wait):
				t.Fatalf("user %q: end marker not delivered; got %v", id.user, delivered)
			}
		}
		for _, topic := range topics {
			mine, theirs := a.Allowed(id.user, id.clientID, topic, Read), delivered[topic]
			if mine != theirs {
				t.Errorf("user %q client %q read %q: Allowed = %v, mosquitto delivered = %v", id.user, id.clientID, topic, mine, theirs)
			}
			// For a topic name, subscribing and reading agree.
			if sub := a.CanSubscribe(id.user, id.clientID, topic); sub != mine {
				t.Errorf("user %q client %q topic %q: CanSubscribe = %v, Allowed(Read) = %v", id.user, id.clientID, topic, sub, mine)
			}
			decided[theirs]++
		}
	}
	if decided[true] == 0 || decided[false] == 0 {
		t.Fatalf("mosquitto allowed %d and refused %d: the table tests nothing", decided[true], decided[false])
	}
}
