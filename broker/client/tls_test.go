package client

import (
	"fmt"
	"path/filepath"
	"strconv"
	"testing"

	"gatewayd/internal/testmosquitto"
	"gatewayd/internal/testpki"
	"gatewayd/internal/testproc"
)

// testPKI is a CA with a server certificate for serverName only (no IP
// address, so that connecting by IP needs SNI/ServerName) and a client
// certificate, written as PEM files.
type testPKI struct {
	ca, serverCert, serverKey     string
	clientCert, clientKey         string
	otherClientCert, otherClientK string // signed by a CA the broker does not trust
}

const serverName = "broker.gateway.test"

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	ca := testpki.New(t, "", "gatewayd test CA")
	p := &testPKI{ca: ca.File}
	p.serverCert, p.serverKey, _ = ca.Issue("server", testpki.Spec{CN: "server", DNS: []string{serverName}, Server: true})
	p.clientCert, p.clientKey, _ = ca.Issue("client", testpki.Spec{CN: "client"})
	other := testpki.New(t, "", "stranger CA")
	p.otherClientCert, p.otherClientK, _ = other.Issue("stranger", testpki.Spec{CN: "stranger"})
	return p
}

// startTLSMosquitto runs mosquitto with a TLS listener beside the plain one
// and returns the TLS listener's URL by IP address.
func startTLSMosquitto(t *testing.T, p *testPKI, requireCert bool) (*testmosquitto.Broker, string) {
	port := testproc.FreePort(t)
	conf := fmt.Sprintf("listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", port, p.ca, p.serverCert, p.serverKey)
	if requireCert {
		conf += "require_certificate true\n"
	}
	mq := startMosquitto(t, conf)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	mq.WaitListening(addr)
	return mq, "mqtts://" + addr
}

func TestTLSWithCAFileAndServerName(t *testing.T) {
	p := newTestPKI(t)
	mq, url := startTLSMosquitto(t, p, false)
	cfg, err := NewTLSConfig(TLSFiles{CAFile: p.ca, ServerName: serverName})
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, Options{URL: url, TLS: cfg, CleanStart: true})
	got := newCollector()
	if _, err := c.Subscribe(testCtx(t), got.handle, Subscription{Filter: "tls/#", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// A plain client on the other listener reaches the TLS one.
	plain := connect(t, Options{URL: mq.URL(), CleanStart: true})
	if err := plain.Publish(testCtx(t), &Message{Topic: "tls/x", Payload: []byte("sealed"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := got.next(t); string(m.Payload) != "sealed" {
		t.Fatalf("got %+v", m)
	}

	// Without the ServerName the certificate (for serverName only) does not
	// match the IP address in the URL.
	cfg2, err := NewTLSConfig(TLSFiles{CAFile: p.ca})
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := New(Options{URL: url, TLS: cfg2})
	if err := c2.Connect(testCtx(t)); err == nil {
		c2.Disconnect(testCtx(t))
		t.Fatal("connected although the certificate does not name the host")
	}
	// Without the CA the server is not trusted.
	c3, _ := New(Options{URL: url, TLS: nil})
	if err := c3.Connect(testCtx(t)); err == nil {
		c3.Disconnect(testCtx(t))
		t.Fatal("connected to a server signed by an unknown CA")
	}
}

func TestMutualTLS(t *testing.T) {
	p := newTestPKI(t)
	_, url := startTLSMosquitto(t, p, true)
	for _, tc := range []struct {
		name      string
		cert, key string
		ok        bool
	}{
		{"trusted client certificate", p.clientCert, p.clientKey, true},
		{"no client certificate", "", "", false},
		{"client certificate from another CA", p.otherClientCert, p.otherClientK, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := NewTLSConfig(TLSFiles{CAFile: p.ca, ServerName: serverName, CertFile: tc.cert, KeyFile: tc.key})
			if err != nil {
				t.Fatal(err)
			}
			c, err := New(Options{URL: url, TLS: cfg, CleanStart: true})
			if err != nil {
				t.Fatal(err)
			}
			err = c.Connect(testCtx(t))
			if err == nil {
				defer c.Disconnect(testCtx(t))
				err = c.Publish(testCtx(t), &Message{Topic: "mtls", QoS: 1})
			}
			if tc.ok && err != nil {
				t.Fatal(err)
			}
			if !tc.ok && err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestNewTLSConfig(t *testing.T) {
	p := newTestPKI(t)
	cfg, err := NewTLSConfig(TLSFiles{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey,
		ServerName: "a1b2c3-ats.iot.eu-west-1.amazonaws.com", NextProtos: []string{"x-amzn-mqtt-ca"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.ServerName == "" || cfg.NextProtos[0] != "x-amzn-mqtt-ca" {
		t.Fatalf("config %+v", cfg)
	}
	for _, f := range []TLSFiles{
		{CAFile: filepath.Join(t.TempDir(), "missing.pem")},
		{CAFile: p.clientKey},
		{CertFile: p.clientCert},
		{CertFile: p.clientCert, KeyFile: p.serverKey},
	} {
		if _, err := NewTLSConfig(f); err == nil {
			t.Errorf("NewTLSConfig(%+v) accepted", f)
		}
	}
}
