package client

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"gatewayd/internal/testmosquitto"
	"gatewayd/internal/testproc"
)

// testPKI is a CA with a server certificate for serverName only (no IP
// address, so that connecting by IP needs SNI/ServerName) and a client
// certificate, written as PEM files in dir.
type testPKI struct {
	dir                           string
	ca, serverCert, serverKey     string
	clientCert, clientKey         string
	otherClientCert, otherClientK string // signed by a CA the broker does not trust
}

const serverName = "broker.gateway.test"

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	caKey, caCert, caDER := makeCA(t, "gatewayd test CA")
	p.ca = p.write(t, "ca.pem", "CERTIFICATE", caDER)
	p.serverCert, p.serverKey = p.leaf(t, "server", caCert, caKey, x509.ExtKeyUsageServerAuth, serverName)
	p.clientCert, p.clientKey = p.leaf(t, "client", caCert, caKey, x509.ExtKeyUsageClientAuth, "")
	otherKey, otherCert, _ := makeCA(t, "stranger CA")
	p.otherClientCert, p.otherClientK = p.leaf(t, "stranger", otherCert, otherKey, x509.ExtKeyUsageClientAuth, "")
	return p
}

func makeCA(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func (p *testPKI) leaf(t *testing.T, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage, dns string) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	if dns != "" {
		tmpl.DNSNames = []string{dns}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+".key", "PRIVATE KEY", kder)
}

func (p *testPKI) write(t *testing.T, name, typ string, der []byte) string {
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
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
		{CAFile: filepath.Join(p.dir, "missing.pem")},
		{CAFile: p.clientKey},
		{CertFile: p.clientCert},
		{CertFile: p.clientCert, KeyFile: p.serverKey},
	} {
		if _, err := NewTLSConfig(f); err == nil {
			t.Errorf("NewTLSConfig(%+v) accepted", f)
		}
	}
}
