package broker

import (
	"crypto/tls"
	"net"
	"os"
	"strings"
	"testing"

	"gatewayd/broker/packet"
	"gatewayd/internal/testpki"
)

// dialTLS connects to addr over TLS (trusting the test CA, presenting the
// client certificate when given) and returns an MQTT client on it and the
// server's certificate serial number.
func dialTLS(t testing.TB, p *testpki.CA, addr string, v packet.Version, certFile, keyFile string) (*rawClient, int64) {
	t.Helper()
	tc := &tls.Config{RootCAs: p.Pool}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: wait}, "tcp", addr, tc)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return newRaw(t, nc, v), nc.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// inProcess connects an in-process client (ServeConn over net.Pipe).
func inProcess(t testing.TB, s *Server, id string) *rawClient {
	t.Helper()
	cl, sv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(sv, "in-process")
	}()
	t.Cleanup(func() {
		cl.Close()
		<-done
	})
	r := newRaw(t, cl, packet.V5)
	r.mustConnect(id, true)
	return r
}

// mosquitto_sub --cafile connects to a TLS listener and receives; a client
// offering only TLS 1.1 is refused (TLS 1.2 is the minimum).
func TestTLSListenerWithMosquittoSub(t *testing.T) {
	p := testpki.New(t, "", "gatewayd test CA")
	cert, key, _ := p.Localhost("server")
	s, addr := startServer(t, func(c *Config) {
		c.Listeners[0].TLS = &TLSConfig{CertFile: cert, KeyFile: key}
	}, Options{})
	pub := inProcess(t, s, "publisher")
	pub.publish("tls/t", 1, true, 1, "over tls")
	pub.nextAck(packet.PUBACK)

	h, port := hostPort(t, addr)
	out, code := runTool(t, "mosquitto_sub", "-h", h, "-p", port, "--cafile", p.File, "-t", "tls/#", "-C", "1", "-W", "10", "-v")
	if code != 0 || strings.TrimSpace(out) != "tls/t over tls" {
		t.Fatalf("mosquitto_sub --cafile: exit %d, output %q; want the retained message", code, out)
	}
	out, code = runTool(t, "mosquitto_sub", "-h", h, "-p", port, "-t", "tls/#", "-C", "1", "-W", "2")
	if code == 0 {
		t.Fatalf("mosquitto_sub without TLS to a TLS listener succeeded: %q", out)
	}

	nc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: p.Pool, MaxVersion: tls.VersionTLS11})
	if err == nil {
		nc.Close()
		t.Fatalf("a TLS 1.1 handshake succeeded; want TLS 1.2 or later only")
	}
}

// With require_client_cert, a client without a certificate is refused
// during the handshake, and one with a certificate from client_ca_file is
// served (mosquitto_pub --cert/--key).
func TestMutualTLSRequiresClientCertificate(t *testing.T) {
	p := testpki.New(t, "", "gatewayd test CA")
	cert, key, _ := p.Localhost("server")
	ccert, ckey, _ := p.Issue("device", testpki.Spec{CN: "device-1"})
	s, addr := startServer(t, func(c *Config) {
		c.Listeners[0].TLS = &TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: p.File, RequireClientCert: true}
	}, Options{})
	sub := inProcess(t, s, "watcher")
	sub.subscribe(1, "mtls/#", 1)

	h, port := hostPort(t, addr)
	out, code := runTool(t, "mosquitto_pub", "-h", h, "-p", port, "--cafile", p.File, "-t", "mtls/no-cert", "-m", "x")
	if code == 0 {
		t.Fatalf("mosquitto_pub without a client certificate succeeded: %s", out)
	}
	out, code = runTool(t, "mosquitto_pub", "-h", h, "-p", port, "--cafile", p.File, "--cert", ccert, "--key", ckey, "-q", "1", "-t", "mtls/cert", "-m", "with cert")
	if code != 0 {
		t.Fatalf("mosquitto_pub with a client certificate: exit %d: %s", code, out)
	}
	if m := sub.nextPublish(); string(m.Topic) != "mtls/cert" || string(m.Payload) != "with cert" {
		t.Fatalf("received %s %q", m.Topic, m.Payload)
	}

	// A certificate from another CA is refused too.
	other := testpki.New(t, "", "gatewayd test CA")
	ocert, okey, _ := other.Issue("stranger", testpki.Spec{CN: "stranger"})
	out, code = runTool(t, "mosquitto_pub", "-h", h, "-p", port, "--cafile", p.File, "--cert", ocert, "--key", okey, "-t", "mtls/x", "-m", "x")
	if code == 0 {
		t.Fatalf("mosquitto_pub with a certificate from an unknown CA succeeded: %s", out)
	}
}

// With username_from: cn the client certificate's common name is the user
// name: no password is needed, and the ACL of that user applies. With
// username_from: san the first DNS name, or failing that the first email
// address, is.
func TestUsernameFromClientCertificate(t *testing.T) {
	p := testpki.New(t, "", "gatewayd test CA")
	cert, key, _ := p.Localhost("server")
	aliceCert, aliceKey, _ := p.Issue("alice", testpki.Spec{CN: "alice"})
	bobCert, bobKey, _ := p.Issue("bob", testpki.Spec{CN: "bob", Emails: []string{"carol@example.com"}})
	dir := t.TempDir()
	acl := writeFile(t, dir, "acl", "user alice\ntopic readwrite alice/#\nuser bob\ntopic readwrite bob/#\nuser carol@example.com\ntopic readwrite carol/#\n")
	pw := passwordFile(t, dir, map[string]string{"alice": "a"})
	s, _ := startServer(t, func(c *Config) {
		c.ACLFile, c.PasswordFile = acl, pw
		c.Listeners = []ListenerConfig{
			{Name: "cn", Address: "127.0.0.1:0", AllowAnonymous: boolp(false),
				TLS: &TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: p.File, UsernameFrom: "cn"}},
			{Name: "san", Address: "127.0.0.1:0", AllowAnonymous: boolp(false),
				TLS: &TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: p.File, UsernameFrom: "san"}},
		}
	}, Options{})
	cnAddr, sanAddr := s.Addrs()[0].String(), s.Addrs()[1].String()

	alice, _ := dialTLS(t, p, cnAddr, packet.V5, aliceCert, aliceKey)
	if ack := alice.connect(rawConnect{id: "a1", clean: true}.packet()); ack.Reason != packet.Success {
		t.Fatalf("alice by certificate, no password: CONNACK %#x", ack.Reason)
	}
	alice.publish("alice/x", 1, false, 1, "mine")
	if a := alice.nextAck(packet.PUBACK); a.Reason != packet.Success {
		t.Fatalf("alice PUBLISH alice/x: %#x", a.Reason)
	}
	alice.publish("bob/x", 1, false, 2, "not mine")
	if a := alice.nextAck(packet.PUBACK); a.Reason != packet.NotAuthorized {
		t.Fatalf("alice PUBLISH bob/x: %#x, want 0x87", a.Reason)
	}

	// The user name a client sends does not override its certificate.
	bob, _ := dialTLS(t, p, cnAddr, packet.V5, bobCert, bobKey)
	if ack := bob.connect(rawConnect{id: "b1", clean: true, user: "alice"}.packet()); ack.Reason != packet.Success {
		t.Fatalf("bob by certificate: CONNACK %#x", ack.Reason)
	}
	bob.publish("alice/x", 1, false, 1, "as alice?")
	if a := bob.nextAck(packet.PUBACK); a.Reason != packet.NotAuthorized {
		t.Fatalf("bob (claiming alice) PUBLISH alice/x: %#x, want 0x87", a.Reason)
	}

	// A password sent along is checked for the certificate's user.
	wrong, _ := dialTLS(t, p, cnAddr, packet.V5, aliceCert, aliceKey)
	c := rawConnect{id: "a2", clean: true, user: "alice"}.packet()
	c.PasswordFlag, c.Password = true, []byte("wrong")
	if ack := wrong.connect(c); ack.Reason != packet.BadUserNameOrPassword {
		t.Fatalf("alice's certificate with a wrong password: CONNACK %#x, want 0x86", ack.Reason)
	}

	// No certificate: the listener's anonymous policy applies.
	anon, _ := dialTLS(t, p, cnAddr, packet.V5, "", "")
	if ack := anon.connect(rawConnect{id: "anon", clean: true}.packet()); ack.Reason != packet.NotAuthorized {
		t.Fatalf("no certificate, no user: CONNACK %#x, want 0x87", ack.Reason)
	}

	// san: bob's certificate has no DNS name, so its email is the user.
	carol, _ := dialTLS(t, p, sanAddr, packet.V311, bobCert, bobKey)
	if ack := carol.connect(rawConnect{id: "c1", clean: true}.packet()); ack.Reason != packet.V3Accepted {
		t.Fatalf("san identity: CONNACK %#x", ack.Reason)
	}
	if rc := carol.subscribe(1, "carol/#", 1); rc[0] != 1 {
		t.Fatalf("carol@example.com SUBSCRIBE carol/#: %v", rc)
	}
	if rc := carol.subscribe(2, "bob/#", 1); rc[0] != packet.V3SubackFailure {
		t.Fatalf("carol@example.com SUBSCRIBE bob/#: %v, want 0x80", rc)
	}
}

// Replacing the certificate files and calling Reload (or
// ReloadCertificates) gives new clients the new certificate, while a client
// connected before stays connected and keeps receiving.
func TestCertificateReloadKeepsConnectedClients(t *testing.T) {
	p := testpki.New(t, "", "gatewayd test CA")
	cert, key, first := p.Localhost("server")
	s, addr := startServer(t, func(c *Config) {
		c.Listeners[0].TLS = &TLSConfig{CertFile: cert, KeyFile: key}
	}, Options{})
	old, serial := dialTLS(t, p, addr, packet.V311, "", "")
	if serial != first {
		t.Fatalf("first client saw certificate %d, want %d", serial, first)
	}
	old.mustConnect("old", true)
	old.subscribe(1, "reload/#", 0)

	_, _, second := p.Localhost("server") // overwrites the same files
	if err := s.Reload(s.cfg); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	pub, serial := dialTLS(t, p, addr, packet.V311, "", "")
	if serial != second {
		t.Fatalf("client after Reload saw certificate %d, want the new one %d", serial, second)
	}
	pub.mustConnect("new", true)
	pub.publish("reload/x", 0, false, 0, "after reload")
	if m := old.nextPublish(); string(m.Payload) != "after reload" {
		t.Fatalf("old client received %q", m.Payload)
	}

	_, _, third := p.Localhost("server")
	if err := s.ReloadCertificates(); err != nil {
		t.Fatalf("ReloadCertificates: %v", err)
	}
	if _, serial := dialTLS(t, p, addr, packet.V311, "", ""); serial != third {
		t.Fatalf("client after ReloadCertificates saw certificate %d, want %d", serial, third)
	}
	pub.publish("reload/x", 0, false, 0, "after second reload")
	if m := old.nextPublish(); string(m.Payload) != "after second reload" {
		t.Fatalf("old client received %q", m.Payload)
	}

	// A broken file leaves everything as it was.
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadCertificates(); err == nil {
		t.Fatalf("ReloadCertificates with a broken certificate file succeeded")
	}
	if _, serial := dialTLS(t, p, addr, packet.V311, "", ""); serial != third {
		t.Fatalf("after a failed reload the certificate is %d, want still %d", serial, third)
	}
}
