// Package testmosquitto runs a real Debian mosquitto broker for a test: on a
// free loopback port, with a configuration file of the test's choosing, as
// the user running the test; it is killed and reaped when the test ends, and
// its log is shown if the test failed. A test skips when mosquitto is not
// installed (apt-get install mosquitto).
//
// Tests use it to check the gateway's broker, client and bridge against the
// broker most MQTT deployments run. Only tests import it.
package testmosquitto

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gatewayd/internal/testpki"
	"gatewayd/internal/testproc"
)

// Options say how to run mosquitto.
type Options struct {
	// Dir holds mosquitto.conf, and the files Config names (password and
	// ACL files, persistence); a new t.TempDir() when empty.
	Dir string
	// Config is more of mosquitto.conf, after the plain listener: global
	// options (allow_anonymous, password_file, persistence...) and further
	// listeners, each with its own options.
	Config string
	// Verbose runs mosquitto -v: it logs every packet, which tests read with
	// Logged to know that it has handled one.
	Verbose bool
	// TLS opens a second listener, on TLSPort, with a server certificate for
	// 127.0.0.1 and localhost signed by the CA in the PEM file CAFile.
	TLS bool
}

// Broker is a running mosquitto.
type Broker struct {
	Dir     string
	Port    int    // of the plain listener on 127.0.0.1
	TLSPort int    // of the TLS listener, with Options.TLS
	CAFile  string // PEM file of the CA of the TLS listener's certificate
	proc    *testproc.Process
}

// Start runs mosquitto with opts and returns once its plain listener accepts
// connections.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	if _, err := exec.LookPath("mosquitto"); err != nil {
		t.Skip("mosquitto is not installed (apt-get install mosquitto)")
	}
	b := &Broker{Dir: opts.Dir, Port: testproc.FreePort(t)}
	if b.Dir == "" {
		b.Dir = t.TempDir()
	}
	// user: mosquitto started as root would otherwise switch to the
	// "mosquitto" user, which cannot read the test's files.
	me := "root"
	if u, err := user.Current(); err == nil {
		me = u.Username
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, "user %s\nlistener %d 127.0.0.1\n%s", me, b.Port, opts.Config)
	if opts.TLS {
		b.TLSPort = testproc.FreePort(t)
		ca := testpki.New(t, b.Dir, "mosquitto test CA")
		b.CAFile = ca.File
		cert, key, _ := ca.Localhost("server")
		if s := conf.String(); !strings.HasSuffix(s, "\n") {
			conf.WriteString("\n")
		}
		fmt.Fprintf(&conf, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", b.TLSPort, b.CAFile, cert, key)
	}
	path := filepath.Join(b.Dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := []string{"mosquitto", "-c", path}
	if opts.Verbose {
		argv = append(argv, "-v")
	}
	b.proc = testproc.New(t, "mosquitto", b.Addr(), argv...)
	b.proc.Start()
	return b
}

// Addr is the plain listener's address, "127.0.0.1:port".
func (b *Broker) Addr() string { return "127.0.0.1:" + strconv.Itoa(b.Port) }

// URL is the plain listener's URL, mqtt://127.0.0.1:port.
func (b *Broker) URL() string { return "mqtt://" + b.Addr() }

// TLSURL is the TLS listener's URL by IP address, mqtts://127.0.0.1:port.
func (b *Broker) TLSURL() string { return "mqtts://127.0.0.1:" + strconv.Itoa(b.TLSPort) }

// WaitListening waits until another listener of Config accepts connections
// on addr.
func (b *Broker) WaitListening(addr string) {
	b.proc.WaitListening(addr)
}

// Log returns what mosquitto logged so far.
func (b *Broker) Log() string { return b.proc.Output() }

// Logged reports whether mosquitto logged s.
func (b *Broker) Logged(s string) bool { return b.proc.Logged(s) }

// Stop ends mosquitto the way systemd would (SIGTERM: it saves its
// persistence file) and waits for it.
func (b *Broker) Stop() { b.proc.Stop() }

// Start starts mosquitto again after Stop, on the same ports and with the
// same configuration, and returns once it listens.
func (b *Broker) Start() { b.proc.Start() }

// Restart stops mosquitto (Stop) and starts it again on the same ports.
func (b *Broker) Restart() { b.proc.Restart() }
