package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"testing"
)

// handshake runs a TLS server with serverCfg on a loopback socket and a
// client with clientCfg against it, and returns both sides' errors.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		err = c.(*tls.Conn).Handshake()
		if err == nil {
			_, err = c.Write([]byte("ok"))
		}
		done <- err
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), clientCfg)
	if err == nil {
		_, err = io.ReadAll(io.LimitReader(c, 2))
		c.Close()
	}
	return <-done, err
}

// A client trusting the CA verifies the localhost certificate by IP address
// and by name; a server requiring client certificates from the CA takes one
// it issued and refuses one from another CA.
func TestCertificatesWorkOverTLS(t *testing.T) {
	ca := New(t, "", "test CA")
	cert, key, serial := ca.Localhost("server")
	server, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "localhost"} {
		if se, ce := handshake(t, &tls.Config{Certificates: []tls.Certificate{server}},
			&tls.Config{RootCAs: ca.Pool, ServerName: name}); se != nil || ce != nil {
			t.Fatalf("server name %q: server %v, client %v", name, se, ce)
		}
	}
	if _, ce := handshake(t, &tls.Config{Certificates: []tls.Certificate{server}}, &tls.Config{}); ce == nil {
		t.Fatal("a client that does not trust the CA accepted its certificate")
	}

	ccert, ckey, cserial := ca.Issue("device", Spec{CN: "device-1", Emails: []string{"d@example.com"}})
	if cserial == serial {
		t.Fatalf("two certificates with serial %d", serial)
	}
	client, err := tls.LoadX509KeyPair(ccert, ckey)
	if err != nil {
		t.Fatal(err)
	}
	mtls := &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Pool}
	if se, ce := handshake(t, mtls, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{client}}); se != nil || ce != nil {
		t.Fatalf("client certificate: server %v, client %v", se, ce)
	}
	other := New(t, "", "other CA")
	ocert, okey, _ := other.Issue("stranger", Spec{CN: "stranger"})
	stranger, err := tls.LoadX509KeyPair(ocert, okey)
	if err != nil {
		t.Fatal(err)
	}
	if se, _ := handshake(t, mtls, &tls.Config{RootCAs: ca.Pool, Certificates: []tls.Certificate{stranger}}); se == nil {
		t.Fatal("the server took a client certificate from another CA")
	}

	// The files say what was asked for.
	pemBytes, err := os.ReadFile(ccert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject.CommonName != "device-1" || len(c.EmailAddresses) != 1 || c.SerialNumber.Int64() != cserial ||
		len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("client certificate %v %v %v %v", c.Subject, c.EmailAddresses, c.SerialNumber, c.ExtKeyUsage)
	}
	caPEM, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(caPEM); blk == nil || !ca.Cert.Equal(mustParse(t, blk.Bytes)) || !ca.Cert.IsCA {
		t.Fatal("ca.pem does not hold the CA certificate")
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
