package main

import (
	"bufio"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"gatewayd/internal/testproc"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// roundTrip publishes on c and waits for its own subscription to deliver it.
func roundTrip(t *testing.T, c paho.Client, got <-chan string, payload string) {
	t.Helper()
	if tok := c.Publish("reload/t", 1, false, payload); !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("publish %q: %v", payload, tok.Error())
	}
	select {
	case p := <-got:
		if p != payload {
			t.Fatalf("got %q, want %q", p, payload)
		}
	case <-time.After(hangGuard):
		t.Fatalf("%q never delivered", payload)
	}
}

// A SIGHUP, with a good or a broken configuration, leaves connected clients
// connected: a paho client keeps its one connection and its subscription.
func TestSIGHUPKeepsAConnectedPahoClientConnected(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := brokerConfig(dir, addr)
	path := writeConfig(t, dir, cfg)
	p := start(t, dir, nil, nil, "--config", path)
	p.waitListening()

	connects := make(chan struct{}, 10)
	lost := make(chan error, 10)
	got := make(chan string, 10)
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("reload-watcher").
		SetAutoReconnect(false).SetConnectRetry(false).
		SetOnConnectHandler(func(paho.Client) { connects <- struct{}{} }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Subscribe("reload/t", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	roundTrip(t, c, got, "before")

	// A second listener and a new log level: valid, the client stays.
	second := freeAddr(t)
	writeConfig(t, dir, cfg+"    - name: second\n      address: "+second+"\nlog:\n  level: debug\n")
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="configuration reloaded"`)
	roundTrip(t, c, got, "after a good reload")

	// A broken file: logged with file:line, the old configuration runs on.
	writeConfig(t, dir, cfg+"  listeners_typo: []\n")
	p.signal(syscall.SIGHUP)
	p.waitStderr(path + ":8: broker.listeners_typo: unknown key")
	roundTrip(t, c, got, "after a broken reload")

	select {
	case err := <-lost:
		t.Errorf("connection lost across SIGHUP: %v", err)
	default:
	}
	if n := len(connects); n != 1 {
		t.Errorf("%d connects, want the first one only", n)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

// A device added by a SIGHUP starts publishing, while a client connected
// before stays connected.
func TestSIGHUPStartsAnAddedDevice(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := brokerConfig(dir, addr)
	path := writeConfig(t, dir, cfg)
	p := start(t, dir, nil, nil, "--config", path)
	p.waitListening()

	got := make(chan string, 100)
	lost := make(chan error, 1)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("device-watcher").
		SetAutoReconnect(false).SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
	if tok := c.Connect(); !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Subscribe("gatewayd/gw-test/cpu/#", 0, func(_ paho.Client, m paho.Message) {
		select {
		case got <- m.Topic():
		default:
		}
	}); !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	writeConfig(t, dir, cfg+"devices:\n  - name: cpu\n    driver: system\n    interval: 1s\n")
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="devices restarted with the new configuration" devices=1`)
	select {
	case topic := <-got:
		t.Logf("first message from the added device: %s", topic)
	case <-time.After(hangGuard):
		t.Fatalf("the added device published nothing; stderr:\n%s", p.stderr.String())
	}
	select {
	case err := <-lost:
		t.Errorf("connection lost across SIGHUP: %v", err)
	default:
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

// A bridge added by a SIGHUP starts (its cloud is unreachable here: it keeps
// trying), and one removed by the next SIGHUP stops, its local session (its
// queue) ended; the broker runs on.
func TestSIGHUPStartsAndStopsBridges(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := brokerConfig(dir, addr)
	path := writeConfig(t, dir, cfg)
	p := start(t, dir, nil, nil, "--config", path)
	p.waitListening()

	writeConfig(t, dir, cfg+"bridges:\n  - name: cloud\n    url: mqtt://"+freeAddr(t)+"\n    topics:\n      - {pattern: \"#\", direction: out, qos: 1, local_prefix: up/}\n")
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="bridge started with the new configuration" bridge=cloud`)
	writeConfig(t, dir, cfg)
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="bridge stopped for the new configuration" bridge=cloud`)
	p.waitStderr(`msg="bridge removed from the configuration: its queue is dropped" bridge=cloud`)
	if _, ack := mqttConnect(t, addr, 4); ack[3] != 0 {
		t.Errorf("CONNACK % x after the reloads", ack)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

// mosquittoSub is a mosquitto_sub (-d: it prints the packets it gets)
// subscribed to a topic through gatewayd.
type mosquittoSub struct {
	cmd   *exec.Cmd
	lines chan string
	out   testproc.Buffer
	done  chan struct{}
}

// startMosquittoSub runs mosquitto_sub -V 5 on addr for topic and returns
// once its SUBACK arrived.
func startMosquittoSub(t *testing.T, addr, id, topic string) *mosquittoSub {
	t.Helper()
	bin, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed (make test installs mosquitto-clients)")
	}
	// Its output goes to a pipe: line-buffer it, so each line is seen when
	// printed.
	stdbuf, err := exec.LookPath("stdbuf")
	if err != nil {
		t.Skip("stdbuf (coreutils) not installed")
	}
	host, port, _ := net.SplitHostPort(addr)
	m := &mosquittoSub{lines: make(chan string, 100), done: make(chan struct{})}
	m.cmd = exec.Command(stdbuf, "-oL", bin, "-V", "5", "-d", "-h", host, "-p", port, "-i", id, "-t", topic, "-v", "-q", "1")
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stderr = &m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m.out.Write(append(sc.Bytes(), '\n'))
			m.lines <- sc.Text()
		}
		close(m.lines)
		m.cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		m.cmd.Process.Kill()
		for range m.lines {
		}
		<-m.done
	})
	m.waitLine(t, "received SUBACK")
	return m
}

// waitLine waits for a line of mosquitto_sub's output containing s.
func (m *mosquittoSub) waitLine(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(hangGuard)
	for {
		select {
		case line, ok := <-m.lines:
			if !ok {
				t.Fatalf("mosquitto_sub ended before printing %q:\n%s", s, m.out.String())
			}
			if strings.Contains(line, s) {
				return
			}
		case <-timeout:
			t.Fatalf("mosquitto_sub did not print %q:\n%s", s, m.out.String())
		}
	}
}

// A SIGHUP that adds a listener opens it: mosquitto_sub connects through
// it and receives what a paho client on the first listener publishes, that
// client staying connected all along. The next SIGHUP, removing it, closes
// it and disconnects mosquitto_sub (DISCONNECT 0x8B); one naming a busy
// address changes nothing and says where the address is set.
func TestSIGHUPOpensAndClosesListeners(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := brokerConfig(dir, addr)
	path := writeConfig(t, dir, cfg)
	p := start(t, dir, nil, nil, "--config", path)
	p.waitListening()

	connects := make(chan struct{}, 10)
	lost := make(chan error, 10)
	got := make(chan string, 10)
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("first-listener").
		SetAutoReconnect(false).SetConnectRetry(false).
		SetOnConnectHandler(func(paho.Client) { connects <- struct{}{} }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
	if tok := c.Connect(); !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Subscribe("reload/t", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(hangGuard) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	second := freeAddr(t)
	withSecond := cfg + "    - name: second\n      address: " + second + "\n"
	writeConfig(t, dir, withSecond)
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="listeners changed" opened="[second ` + second + ` mqtt]" closed=[]`)
	p.waitStderr(`msg="configuration reloaded"`)
	if strings.Contains(p.stderr.String(), "next restart") {
		t.Errorf("a listener change was logged as needing a restart:\n%s", p.stderr.String())
	}
	ms := startMosquittoSub(t, second, "on-second", "reload/t")
	roundTrip(t, c, got, "across the new listener")
	ms.waitLine(t, "reload/t across the new listener")

	// A listener on a busy address: nothing changes.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	writeConfig(t, dir, withSecond+"    - name: third\n      address: "+busy.Addr().String()+"\n")
	p.signal(syscall.SIGHUP)
	p.waitStderr(`cannot listen on ` + busy.Addr().String() + ` for listener third (change broker.listeners[2].address)`)
	p.waitStderr(path + ":11: change broker.listeners[2].address (" + busy.Addr().String() + ") to a free address")
	roundTrip(t, c, got, "after the failed reload")
	ms.waitLine(t, "reload/t after the failed reload")

	// Back to the first listener only.
	writeConfig(t, dir, cfg)
	p.signal(syscall.SIGHUP)
	p.waitStderr(`msg="listeners changed" opened=[] closed="[second ` + second + ` mqtt]"`)
	ms.waitLine(t, "Received DISCONNECT (139)")
	select {
	case <-ms.done:
	case <-time.After(hangGuard):
		t.Fatalf("mosquitto_sub still running after its listener closed:\n%s", ms.out.String())
	}
	if nc, err := net.Dial("tcp", second); err == nil {
		nc.Close()
		t.Errorf("%s still accepts connections", second)
	}
	roundTrip(t, c, got, "after closing the second listener")

	select {
	case err := <-lost:
		t.Errorf("the client of the first listener lost its connection: %v", err)
	default:
	}
	if n := len(connects); n != 1 {
		t.Errorf("%d connects, want the first one only", n)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}
