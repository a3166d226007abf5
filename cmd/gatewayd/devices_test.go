package main

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"gatewayd/broker"
	"gatewayd/broker/client"
	"gatewayd/config"
)

func TestHostIDIsATopicLevel(t *testing.T) {
	for host, want := range map[string]string{
		"raspberrypi": "raspberrypi", "pi-4.local": "pi-4", "gw_1": "gw_1", "my gw": "my-gw", "": "gatewayd",
	} {
		if got := hostID(host); got != want {
			t.Errorf("hostID(%q) = %q, want %q", host, got, want)
		}
	}
}

// The devices section sits at the top level of the file, and a device key
// error names its full path.
func TestDevicesAtTheTopLevel(t *testing.T) {
	cfg := DefaultConfig()
	err := config.LoadBytes("t.yaml", []byte("topic_prefix: site\npayload: json\ndevices:\n  - {name: sys, driver: system}\n"), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Drivers()
	if d.TopicPrefix != "site" || d.Payload != "json" || len(d.Devices) != 1 || d.Devices[0].Driver != "system" || d.HomeAssistant.Prefix != "homeassistant" {
		t.Errorf("drivers section %+v", d)
	}
	cfg = DefaultConfig()
	err = config.LoadBytes("t.yaml", []byte("devices:\n  - {name: sys, driver: nope}\n"), &cfg)
	if err == nil || !contains(err.Error(), "devices[0].driver") {
		t.Errorf("unknown driver: %v", err)
	}
}

// gatewayd's devices are clients of its own broker over in-process pipes:
// the built-in system device comes online and publishes, and goes offline
// when the devices are stopped, before the broker.
func TestDevicesPublishToTheEmbeddedBroker(t *testing.T) {
	bc := broker.DefaultConfig()
	bc.Listeners = []broker.ListenerConfig{{Name: "t", Address: "127.0.0.1:0"}}
	srv, err := broker.New(bc, broker.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())

	cfg := DefaultConfig()
	if err := config.LoadBytes(defaultName, defaultYAML, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.GatewayID = "gw1"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := client.New(client.Options{ClientID: "watch", CleanStart: true, Dialer: func(context.Context) (net.Conn, error) {
		c, s := net.Pipe()
		go srv.ServeConn(s, "test")
		return c, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer sub.Disconnect(context.Background())
	got := make(chan *client.Message, 100)
	if _, err := sub.Subscribe(ctx, func(m *client.Message) { got <- m }, client.Subscription{Filter: "gatewayd/gw1/system/#", QoS: 1}); err != nil {
		t.Fatal(err)
	}

	devs, err := startDevices(cfg, srv, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"status=online": false, "uptime": false}
	for !want["status=online"] || !want["uptime"] {
		select {
		case m := <-got:
			switch {
			case m.Topic == "gatewayd/gw1/system/status" && string(m.Payload) == "online":
				want["status=online"] = true
			case m.Topic == "gatewayd/gw1/system/uptime":
				want["uptime"] = true
			}
		case <-ctx.Done():
			t.Fatalf("from the system device: %v", want)
		}
	}
	devs.stop(ctx)
	for {
		select {
		case m := <-got:
			if m.Topic == "gatewayd/gw1/system/status" && string(m.Payload) == "offline" {
				return
			}
		case <-ctx.Done():
			t.Fatal("no offline status after the devices stopped")
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
