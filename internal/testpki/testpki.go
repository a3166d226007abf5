// Package testpki makes a certificate authority for a test and the server
// and client certificates it signs, written as PEM files that gatewayd,
// mosquitto and the mosquitto clients read: the CA certificate as ca.pem, a
// certificate and its key as NAME.pem and NAME.key (PKCS #8). Keys are ECDSA
// P-256; certificates are valid from an hour ago for a day.
//
// Tests of TLS listeners, client certificates and the TLS client use it.
// Only tests import it.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority made for one test.
type CA struct {
	File string            // the CA certificate, PEM
	Cert *x509.Certificate // the CA certificate
	Pool *x509.CertPool    // holding only Cert, for tls.Config.RootCAs

	t      testing.TB
	dir    string
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

// New makes a CA named name (its Common Name) and writes its certificate to
// dir/ca.pem; an empty dir is a fresh temporary directory of the test's.
func New(t testing.TB, dir, name string) *CA {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ca := &CA{t: t, dir: dir, key: newKey(t)}
	ca.serial.Store(1)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	ca.Pool = x509.NewCertPool()
	ca.Pool.AddCert(ca.Cert)
	ca.File = filepath.Join(dir, "ca.pem")
	ca.write(ca.File, "CERTIFICATE", der)
	return ca
}

// Spec says what a certificate is for.
type Spec struct {
	CN     string
	DNS    []string
	Emails []string
	IPs    []net.IP
	Server bool // for a server (ExtKeyUsageServerAuth); otherwise for a client
}

// Issue writes NAME.pem and NAME.key, a certificate signed by ca and its
// key, and returns their paths and the certificate's serial number. Issuing
// the same name again overwrites the files.
func (ca *CA) Issue(name string, s Spec) (certFile, keyFile string, serial int64) {
	ca.t.Helper()
	key := newKey(ca.t)
	serial = ca.serial.Add(1)
	usage := x509.ExtKeyUsageClientAuth
	if s.Server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(serial),
		Subject:        pkix.Name{CommonName: s.CN},
		DNSNames:       s.DNS,
		EmailAddresses: s.Emails,
		IPAddresses:    s.IPs,
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+".key")
	ca.write(certFile, "CERTIFICATE", der)
	ca.write(keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile, serial
}

// Localhost issues a server certificate for localhost and 127.0.0.1.
func (ca *CA) Localhost(name string) (certFile, keyFile string, serial int64) {
	ca.t.Helper()
	return ca.Issue(name, Spec{CN: "localhost", DNS: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
}

func (ca *CA) write(path, kind string, der []byte) {
	ca.t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
