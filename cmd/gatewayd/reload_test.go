package main

import (
	"syscall"
	"testing"
	"time"

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
// trying), and one removed by the next SIGHUP stops; the broker runs on.
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
	if _, ack := mqttConnect(t, addr, 4); ack[3] != 0 {
		t.Errorf("CONNACK % x after the reloads", ack)
	}
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}
