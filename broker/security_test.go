package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"gatewayd/broker/auth"
	"gatewayd/broker/packet"
	"gatewayd/internal/testpki"
	"gatewayd/internal/testproc"
)

// Helpers shared by the security, TLS, WebSocket and limit tests.

func boolp(b bool) *bool { return &b }

// writeFile writes a file for a test and returns its path.
func writeFile(t testing.TB, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// passwordFile writes a password file (argon2id entries) with users.
func passwordFile(t testing.TB, dir string, users map[string]string) string {
	t.Helper()
	p := filepath.Join(dir, "passwd")
	for u, pw := range users {
		if err := auth.SetPassword(p, u, []byte(pw)); err != nil {
			t.Fatalf("SetPassword %s: %v", u, err)
		}
	}
	return p
}

// runTool runs a command to completion (bounded by wait) and returns its
// combined output and exit status.
func runTool(t testing.TB, name string, args ...string) (string, int) {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install mosquitto-clients): %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

func hostPort(t testing.TB, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// connectRaw dials addr and sends CONNECT; it returns the client and CONNACK.
func connectRaw(t testing.TB, addr string, v packet.Version, rc rawConnect, password string) (*rawClient, *packet.Connack) {
	t.Helper()
	r := dialRaw(t, addr, v)
	c := rc.packet()
	if password != "" {
		c.PasswordFlag, c.Password = true, []byte(password)
	}
	return r, r.connect(c)
}

// v3Connect tries a paho.mqtt.golang connection and returns its error.
func v3Connect(t testing.TB, addr, id, user, password string) error {
	t.Helper()
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(4).
		SetAutoReconnect(false).SetConnectRetry(false).SetUsername(user).SetPassword(password)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatalf("paho v3 %s: no answer to CONNECT", id)
	}
	if tok.Error() == nil {
		c.Disconnect(50)
	}
	return tok.Error()
}

// v5Connect tries a paho.golang connection and returns its CONNACK.
func v5Connect(t testing.TB, addr string, cp *paho.Connect) (*paho.Connack, error) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: nc, PacketTimeout: wait})
	cp.KeepAlive, cp.CleanStart = 30, true
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err == nil {
		c.Disconnect(&paho.Disconnect{})
	}
	return ca, err
}

// With password_file, a wrong password is refused with v5 0x86 (paho.golang)
// and 3.1.1 0x04 (paho.mqtt.golang's "bad user name or password",
// mosquitto_pub's "Connection Refused: bad user name or password"), an
// anonymous client on a listener that does not allow one with v5 0x87 and
// 3.1.1 0x05; the right password connects; failures are counted.
func TestPasswordFileRefusesWrongPassword(t *testing.T) {
	dir := t.TempDir()
	pw := passwordFile(t, dir, map[string]string{"alice": "wonderland"})
	s, addr := startServer(t, func(c *Config) {
		c.PasswordFile = pw
		c.Listeners[0].AllowAnonymous = boolp(false)
	}, Options{})

	t.Run("v5 wrong password 0x86", func(t *testing.T) {
		ca, err := v5Connect(t, addr, &paho.Connect{ClientID: "a5", Username: "alice", UsernameFlag: true, Password: []byte("nope"), PasswordFlag: true})
		if err == nil || ca == nil || ca.ReasonCode != 0x86 {
			t.Fatalf("CONNACK %+v, err %v; want reason 0x86", ca, err)
		}
	})
	t.Run("v5 unknown user 0x86", func(t *testing.T) {
		ca, err := v5Connect(t, addr, &paho.Connect{ClientID: "m5", Username: "mallory", UsernameFlag: true, Password: []byte("x"), PasswordFlag: true})
		if err == nil || ca == nil || ca.ReasonCode != 0x86 {
			t.Fatalf("CONNACK %+v, err %v; want reason 0x86", ca, err)
		}
	})
	t.Run("v5 anonymous 0x87", func(t *testing.T) {
		ca, err := v5Connect(t, addr, &paho.Connect{ClientID: "anon5"})
		if err == nil || ca == nil || ca.ReasonCode != 0x87 {
			t.Fatalf("CONNACK %+v, err %v; want reason 0x87", ca, err)
		}
	})
	t.Run("v5 right password", func(t *testing.T) {
		if ca, err := v5Connect(t, addr, &paho.Connect{ClientID: "ok5", Username: "alice", UsernameFlag: true, Password: []byte("wonderland"), PasswordFlag: true}); err != nil {
			t.Fatalf("refused: %v (%+v)", err, ca)
		}
	})
	t.Run("v3 wrong password 0x04", func(t *testing.T) {
		err := v3Connect(t, addr, "a3", "alice", "nope")
		if err == nil || !strings.Contains(err.Error(), "bad user name or password") {
			t.Fatalf("paho v3 error %v, want bad user name or password (0x04)", err)
		}
		_, ack := connectRaw(t, addr, packet.V311, rawConnect{id: "raw3", clean: true, user: "alice"}, "nope")
		if ack.Reason != packet.V3RefusedBadUsernamePassword {
			t.Fatalf("CONNACK return code %#x, want 0x04", ack.Reason)
		}
	})
	t.Run("v3 anonymous 0x05", func(t *testing.T) {
		err := v3Connect(t, addr, "anon3", "", "")
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authorized") {
			t.Fatalf("paho v3 error %v, want not authorized (0x05)", err)
		}
	})
	t.Run("v3 right password", func(t *testing.T) {
		if err := v3Connect(t, addr, "ok3", "alice", "wonderland"); err != nil {
			t.Fatalf("refused: %v", err)
		}
	})
	t.Run("mosquitto_pub wrong password", func(t *testing.T) {
		h, p := hostPort(t, addr)
		out, code := runTool(t, "mosquitto_pub", "-h", h, "-p", p, "-u", "alice", "-P", "nope", "-t", "x", "-m", "y")
		if code == 0 || !strings.Contains(out, "bad user name or password") {
			t.Fatalf("mosquitto_pub exit %d, output %q; want a failure saying bad user name or password", code, out)
		}
	})
	if n := s.Stats().AuthFailures; n < 6 {
		t.Fatalf("Stats.AuthFailures = %d, want at least 6", n)
	}
}

// A password file made by mosquitto_passwd (Mosquitto's $7$ PBKDF2 hashes)
// works: mosquitto_pub logs in with it and its message arrives; a wrong
// password is refused.
func TestPasswordFileFromMosquittoPasswd(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "mosquitto.passwd")
	if out, code := runTool(t, "mosquitto_passwd", "-c", "-b", pw, "sensor", "t0ps3cret"); code != 0 {
		t.Fatalf("mosquitto_passwd: exit %d: %s", code, out)
	}
	_, addr := startServer(t, func(c *Config) {
		c.PasswordFile = pw
		c.Listeners[0].AllowAnonymous = boolp(false)
	}, Options{})
	sub, got, _ := v5(t, addr, &paho.Connect{ClientID: "watcher", CleanStart: true, Username: "sensor", UsernameFlag: true, Password: []byte("t0ps3cret"), PasswordFlag: true})
	ctx, cancel := ctxWait()
	defer cancel()
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	h, p := hostPort(t, addr)
	if out, code := runTool(t, "mosquitto_pub", "-h", h, "-p", p, "-u", "sensor", "-P", "t0ps3cret", "-q", "1", "-t", "sensors/t", "-m", "21.5"); code != 0 {
		t.Fatalf("mosquitto_pub with the right password: exit %d: %s", code, out)
	}
	if m := got.waitN(t, 1)[0]; m.Payload != "21.5" {
		t.Fatalf("received %+v", m)
	}
	if out, code := runTool(t, "mosquitto_pub", "-h", h, "-p", p, "-u", "sensor", "-P", "wrong", "-t", "sensors/t", "-m", "x"); code == 0 {
		t.Fatalf("mosquitto_pub with a wrong password succeeded: %s", out)
	}
}

const testACL = `# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read shared/#
topic deny shared/secret

user bob
topic readwrite bob/#

pattern readwrite devices/%c/#
pattern read users/%u/#
`

// With acl_file, a refused PUBLISH is not routed (v5 PUBACK 0x87), a refused
// SUBSCRIBE filter gets v5 0x87 and 3.1.1 0x80, delivery is checked again
// (deny shared/secret inside a readable shared/#), and %c and %u patterns
// give each client its own topics.
func TestACLFileDeniesPublishAndSubscribe(t *testing.T) {
	dir := t.TempDir()
	pw := passwordFile(t, dir, map[string]string{"alice": "a", "bob": "b"})
	acl := writeFile(t, dir, "acl", testACL)
	s, addr := startServer(t, func(c *Config) { c.PasswordFile, c.ACLFile = pw, acl }, Options{})

	alice, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "dev1", clean: true, user: "alice"}, "a")
	bob, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "dev2", clean: true, user: "bob"}, "b")

	if rc := alice.subscribe(1, "bob/#", 1); rc[0] != packet.NotAuthorized {
		t.Fatalf("alice SUBSCRIBE bob/#: %v, want 0x87", rc)
	}
	if rc := alice.subscribe(2, "shared/#", 1); rc[0] != packet.NotAuthorized {
		t.Fatalf("alice SUBSCRIBE shared/# (overlaps deny shared/secret): %v, want 0x87", rc)
	}
	for i, f := range []string{"alice/#", "users/alice/#", "devices/dev1/#", "shared/+/x"} {
		if rc := alice.subscribe(uint16(10+i), f, 1); rc[0] != 1 {
			t.Fatalf("alice SUBSCRIBE %s: %v, want granted QoS 1", f, rc)
		}
	}
	if rc := alice.subscribe(3, "users/bob/#", 0); rc[0] != packet.NotAuthorized {
		t.Fatalf("alice SUBSCRIBE users/bob/# (%%u is alice): %v, want 0x87", rc)
	}

	// Bob may not publish to alice/..., may publish to devices/<his id>/...
	bob.publish("alice/x", 1, false, 20, "from bob")
	if a := bob.nextAck(packet.PUBACK); a.Reason != packet.NotAuthorized {
		t.Fatalf("bob PUBLISH alice/x: PUBACK %#x, want 0x87", a.Reason)
	}
	bob.publish("devices/dev1/cmd", 1, false, 21, "not his device")
	if a := bob.nextAck(packet.PUBACK); a.Reason != packet.NotAuthorized {
		t.Fatalf("bob PUBLISH devices/dev1/cmd (%%c is dev2): PUBACK %#x, want 0x87", a.Reason)
	}
	bob.publish("devices/dev2/state", 1, false, 22, "his device")
	if a := bob.nextAck(packet.PUBACK); a.Reason != packet.Success {
		t.Fatalf("bob PUBLISH devices/dev2/state: PUBACK %#x, want 0", a.Reason)
	}
	// Alice publishes to her own topic: the first message she receives is
	// hers, so nothing bob sent to her topics got through.
	alice.publish("alice/x", 1, false, 23, "from alice")
	for {
		p := alice.next()
		if a, ok := p.(*packet.Ack); ok && a.Kind == packet.PUBACK {
			continue
		}
		pub, ok := p.(*packet.Publish)
		if !ok {
			t.Fatalf("alice got %v", p.Type())
		}
		if string(pub.Payload) != "from alice" {
			t.Fatalf("alice received %q on %s; want only her own message", pub.Payload, pub.Topic)
		}
		break
	}

	v3, _ := connectRaw(t, addr, packet.V311, rawConnect{id: "v3", clean: true, user: "bob"}, "b")
	if rc := v3.subscribe(1, "alice/#", 0); rc[0] != packet.V3SubackFailure {
		t.Fatalf("3.1.1 SUBSCRIBE refused: %v, want 0x80", rc)
	}
	st := s.Stats()
	if st.PublishDenied < 2 || st.SubscribeDenied < 4 {
		t.Fatalf("Stats PublishDenied %d SubscribeDenied %d, want at least 2 and 4", st.PublishDenied, st.SubscribeDenied)
	}
}

// Delivery is checked per message, and Reload swaps the ACL for connected
// clients too: after a reload that lets anonymous clients read only t/ok, a
// subscription to t/# made before no longer receives t/secret, while t/ok
// still arrives.
func TestACLFileReloadChecksEachDelivery(t *testing.T) {
	dir := t.TempDir()
	acl := writeFile(t, dir, "acl", "topic readwrite t/#\n")
	s, addr := startServer(t, func(c *Config) { c.ACLFile = acl }, Options{})
	sub, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "sub", clean: true}, "")
	if rc := sub.subscribe(1, "t/#", 0); rc[0] != 0 {
		t.Fatalf("SUBSCRIBE t/#: %v", rc)
	}
	// Now every client may publish anywhere under t/, but anonymous
	// clients may read only t/ok.
	writeFile(t, dir, "acl", "topic read t/ok\npattern write t/#\n")
	cfg := s.cfg
	if err := s.Reload(cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	pub, _ := connectRaw(t, addr, packet.V5, rawConnect{id: "pub", clean: true}, "")
	pub.publish("t/secret", 1, false, 2, "hidden")
	if a := pub.nextAck(packet.PUBACK); a.Reason != packet.Success {
		t.Fatalf("PUBLISH t/secret: %#x, want accepted (writing is allowed)", a.Reason)
	}
	pub.publish("t/ok", 1, false, 1, "seen")
	if a := pub.nextAck(packet.PUBACK); a.Reason != packet.Success {
		t.Fatalf("PUBLISH t/ok: %#x", a.Reason)
	}
	if p := sub.nextPublish(); string(p.Topic) != "t/ok" {
		t.Fatalf("subscriber received %s first; t/secret is denied since the reload", p.Topic)
	}
}

// In-process clients served through ServeConn obey the ACL: an anonymous
// driver may publish where anonymous clients may, and nowhere else.
func TestACLFileAppliesToInProcessClients(t *testing.T) {
	dir := t.TempDir()
	acl := writeFile(t, dir, "acl", "topic readwrite drivers/#\n")
	s, _ := startServer(t, func(c *Config) { c.ACLFile = acl }, Options{})
	cl, sv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(sv, "drivers")
	}()
	t.Cleanup(func() {
		cl.Close()
		<-done
	})
	r := newRaw(t, cl, packet.V5)
	r.mustConnect("bme280", true)
	r.publish("drivers/bme280/t", 1, false, 1, "21")
	if a := r.nextAck(packet.PUBACK); a.Reason != packet.Success {
		t.Fatalf("PUBLISH drivers/...: %#x", a.Reason)
	}
	r.publish("bridge/up", 1, false, 2, "x")
	if a := r.nextAck(packet.PUBACK); a.Reason != packet.NotAuthorized {
		t.Fatalf("PUBLISH bridge/up: %#x, want 0x87", a.Reason)
	}
	if rc := r.subscribe(3, "#", 0); rc[0] != packet.NotAuthorized {
		t.Fatalf("SUBSCRIBE #: %v, want 0x87", rc)
	}
}

// firstNonLoopbackIPv4 is an address of this machine that is not loopback.
func firstNonLoopbackIPv4(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("this machine has no non-loopback IPv4 address to listen on")
	return ""
}

// A listener on a non-loopback address refuses anonymous clients unless
// allow_anonymous is set for it; loopback listeners allow them by default.
func TestNonLoopbackListenerRefusesAnonymous(t *testing.T) {
	ip := firstNonLoopbackIPv4(t)
	s, _ := startServer(t, func(c *Config) {
		c.Listeners = []ListenerConfig{
			{Name: "lan", Address: net.JoinHostPort(ip, "0")},
			{Name: "lan-open", Address: net.JoinHostPort(ip, "0"), AllowAnonymous: boolp(true)},
			{Name: "local", Address: "127.0.0.1:0"},
		}
	}, Options{})
	addrs := s.Addrs()
	_, ack := connectRaw(t, addrs[0].String(), packet.V5, rawConnect{id: "anon-lan", clean: true}, "")
	if ack.Reason != packet.NotAuthorized {
		t.Fatalf("anonymous on %s: CONNACK %#x, want 0x87", addrs[0], ack.Reason)
	}
	_, ack = connectRaw(t, addrs[0].String(), packet.V311, rawConnect{id: "anon-lan3", clean: true, user: "someone"}, "x")
	if ack.Reason != packet.V3RefusedNotAuthorized {
		t.Fatalf("user name without password_file on %s: CONNACK %#x, want 0x05", addrs[0], ack.Reason)
	}
	_, ack = connectRaw(t, addrs[1].String(), packet.V5, rawConnect{id: "anon-open", clean: true}, "")
	if ack.Reason != packet.Success {
		t.Fatalf("anonymous with allow_anonymous: true: CONNACK %#x, want 0", ack.Reason)
	}
	_, ack = connectRaw(t, addrs[2].String(), packet.V5, rawConnect{id: "anon-local", clean: true}, "")
	if ack.Reason != packet.Success {
		t.Fatalf("anonymous on loopback: CONNACK %#x, want 0", ack.Reason)
	}
}

// Options.Auth, when given, decides in place of password_file and the
// listener's anonymous policy.
func TestOptionsAuthTakesPrecedence(t *testing.T) {
	dir := t.TempDir()
	pw := passwordFile(t, dir, map[string]string{"alice": "a"})
	_, addr := startServer(t, func(c *Config) {
		c.PasswordFile = pw
		c.Listeners[0].AllowAnonymous = boolp(false)
	}, Options{Auth: allowAll{}})
	_, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "anon", clean: true}, "")
	if ack.Reason != packet.Success {
		t.Fatalf("CONNACK %#x, want 0: the embedded Authenticator allows everyone", ack.Reason)
	}
}

type allowAll struct{}

func (allowAll) Authenticate(context.Context, *ConnectInfo) packet.ReasonCode { return packet.Success }

// Repeated failed logins from one address are slowed: with auth_throttle
// set to delay from the first failure for an hour, the wrong password's
// CONNACK is held back (no lock held: other clients connect meanwhile), and
// Shutdown cancels the wait instead of waiting for it.
func TestFailedLoginsThrottledAndShutdownCancels(t *testing.T) {
	dir := t.TempDir()
	pw := passwordFile(t, dir, map[string]string{"alice": "a"})
	cfg := DefaultConfig()
	cfg.Listeners = []ListenerConfig{{Address: "127.0.0.1:0"}}
	cfg.SysInterval = 0
	cfg.PasswordFile = pw
	cfg.AuthThrottle.Free = 1
	cfg.AuthThrottle.BaseDelay = time.Hour
	cfg.AuthThrottle.MaxDelay = time.Hour
	cfg.AuthThrottle.Window = time.Hour
	s, err := New(cfg, Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0].String()

	guesser := dialRaw(t, addr, packet.V5)
	c := rawConnect{id: "guesser", clean: true, user: "alice"}.packet()
	c.PasswordFlag, c.Password = true, []byte("guess")
	guesser.sendConnect(c)
	waitFor(t, "the failed login to be counted", func() bool { return s.Stats().AuthFailures == 1 })

	// Another client is not held up by the throttled one.
	if _, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "other", clean: true}, ""); ack.Reason != packet.Success {
		t.Fatalf("anonymous client during the delay: CONNACK %#x", ack.Reason)
	}

	ctx, cancel := ctxWait()
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a throttled login waiting: %v", err)
	}
	p, err := guesser.read()
	if err == nil {
		if ack, ok := p.(*packet.Connack); !ok || ack.Reason == packet.BadUserNameOrPassword || ack.Reason == packet.Success {
			t.Fatalf("throttled client got %v before shutdown; want its answer held back", p.Type())
		}
	}
}

// The security keys validate themselves, each error naming its key; a
// missing password, ACL or certificate file stops New with the file named.
func TestSecurityConfigValidate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listeners = []ListenerConfig{
		{Name: "a", Address: "127.0.0.1:0", Type: "mqtts"},
		{Name: "a", Address: "127.0.0.1:0", Path: "/mqtt", Origins: []string{"x"}},
		{Address: "127.0.0.1:0", Type: "ws", Path: "mqtt", MaxConnections: -1, MaxConnectionsPerSecondPerAddress: intPtr(-1)},
		{Address: "127.0.0.1:0", TLS: &TLSConfig{RequireClientCert: true, UsernameFrom: "uid"}},
	}
	cfg.MaxConnections = -1
	cfg.MaxRetainedBytes = -1
	cfg.AuthThrottle.Free = -1
	_, err := New(cfg, Options{})
	if err == nil {
		t.Fatal("New accepted the configuration")
	}
	for _, key := range []string{
		"listeners[0].type", "listeners[1].name", "listeners[1].path", "listeners[1].origins", "listeners[2].path",
		"listeners[2].max_connections", "listeners[2].max_connections_per_second_per_address",
		"listeners[3].tls.cert_file", "listeners[3].tls.key_file", "listeners[3].tls.client_ca_file",
		"listeners[3].tls.username_from", "max_connections", "max_retained_bytes", "auth_throttle.free",
	} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s:\n%v", key, err)
		}
	}

	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"password_file", func(c *Config) { c.PasswordFile = filepath.Join(dir, "no-passwd") }},
		{"acl_file", func(c *Config) { c.ACLFile = filepath.Join(dir, "no-acl") }},
		{"listeners[0].tls", func(c *Config) {
			c.Listeners[0].TLS = &TLSConfig{CertFile: filepath.Join(dir, "no.pem"), KeyFile: filepath.Join(dir, "no.key")}
		}},
	} {
		cfg := DefaultConfig()
		cfg.Listeners = []ListenerConfig{{Address: "127.0.0.1:0"}}
		tc.mutate(&cfg)
		_, err := New(cfg, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), dir) {
			t.Errorf("%s missing: error %v, want one naming the key and the file", tc.name, err)
		}
	}
}

// The start-up log says, per listener, what is exposed: address, type
// (mqtt, mqtts, ws, wss), client certificates, whether anonymous clients
// are allowed, and the password and ACL files; a failed login is logged
// with the client's address.
func TestStartupLogSaysWhatIsExposed(t *testing.T) {
	dir := t.TempDir()
	pw := passwordFile(t, dir, map[string]string{"alice": "a"})
	p := testpki.New(t, "", "gatewayd test CA")
	cert, key, _ := p.Localhost("server")
	logs := &testproc.Buffer{}
	_, _ = startServer(t, func(c *Config) {
		c.PasswordFile = pw
		c.Listeners = []ListenerConfig{
			{Name: "plain", Address: "127.0.0.1:0"},
			{Name: "secure", Address: "127.0.0.1:0", Type: "ws", AllowAnonymous: boolp(false),
				TLS: &TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: p.File, RequireClientCert: true}},
		}
	}, Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	out := logs.String()
	for _, want := range []string{
		`listener=plain address=127.0.0.1:`, `type=mqtt tls=false client_cert=none anonymous=true`,
		`listener=secure address=127.0.0.1:`, `type=wss tls=true client_cert=required anonymous=false`,
		`password_file=` + pw,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("start-up log lacks %q:\n%s", want, out)
		}
	}
}

// Reload swaps the password file: the new password works at once, the old
// one no longer does, and a client logged in before stays connected.
func TestReloadSwapsPasswordFile(t *testing.T) {
	dir := t.TempDir()
	pw := passwordFile(t, dir, map[string]string{"alice": "old"})
	s, addr := startServer(t, func(c *Config) { c.PasswordFile = pw }, Options{})
	before, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "before", clean: true, user: "alice"}, "old")
	if ack.Reason != packet.Success {
		t.Fatalf("old password before reload: %#x", ack.Reason)
	}
	if err := auth.SetPassword(pw, "alice", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(s.cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if _, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "new", clean: true, user: "alice"}, "new"); ack.Reason != packet.Success {
		t.Fatalf("new password after reload: %#x", ack.Reason)
	}
	if _, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "old", clean: true, user: "alice"}, "old"); ack.Reason != packet.BadUserNameOrPassword {
		t.Fatalf("old password after reload: %#x, want 0x86", ack.Reason)
	}
	ping(t, before)

	// A broken file changes nothing.
	writeFile(t, dir, "passwd", "alice:plaintext\n")
	if err := s.Reload(s.cfg); err == nil {
		t.Fatalf("Reload with a malformed password file succeeded")
	}
	if _, ack := connectRaw(t, addr, packet.V5, rawConnect{id: "new2", clean: true, user: "alice"}, "new"); ack.Reason != packet.Success {
		t.Fatalf("after a failed reload: %#x, want the previous file still in use", ack.Reason)
	}
}
