package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"time"

	"gatewayd/broker"
	"gatewayd/broker/client"
)

// inProcessBroker starts gatewayd's broker with no listener and returns a
// Dialer that connects to it over net.Pipe, and a function to stop it.
func inProcessBroker() (func(context.Context) (net.Conn, error), func()) {
	cfg := broker.DefaultConfig()
	cfg.Listeners = []broker.ListenerConfig{{Address: "127.0.0.1:0"}}
	cfg.SysInterval = 0
	srv, err := broker.New(cfg, broker.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		log.Fatal(err)
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		c, s := net.Pipe()
		go srv.ServeConn(s, "in-process")
		return c, nil
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
	return dial, stop
}

// A driver publishing a reading to the gateway's own broker, in process, and
// a subscriber receiving it.
func Example() {
	dial, stop := inProcessBroker()
	defer stop()
	ctx := context.Background()

	sub, err := client.New(client.Options{Dialer: dial, ClientID: "display", CleanStart: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := sub.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer sub.Disconnect(ctx)
	got := make(chan *client.Message, 1)
	if _, err := sub.Subscribe(ctx, func(m *client.Message) { got <- m },
		client.Subscription{Filter: "sensors/+/temperature", QoS: 1}); err != nil {
		log.Fatal(err)
	}

	drv, err := client.New(client.Options{Dialer: dial, ClientID: "bme280", CleanStart: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := drv.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer drv.Disconnect(ctx)
	err = drv.Publish(ctx, &client.Message{
		Topic: "sensors/bme280/temperature", Payload: []byte("21.5"), QoS: 1,
		ContentType: "text/plain", UserProperties: []client.UserProperty{{Key: "unit", Value: "°C"}},
	})
	if err != nil {
		log.Fatal(err)
	}
	m := <-got
	fmt.Println(m.Topic, string(m.Payload), m.QoS, m.ContentType, m.UserProperties)
	// Output: sensors/bme280/temperature 21.5 1 text/plain [{unit °C}]
}

// Store-and-forward: PublishAsync reports each message's acknowledgement,
// when the bridge may delete it from its store.
func ExampleClient_PublishAsync() {
	dial, stop := inProcessBroker()
	defer stop()
	ctx := context.Background()
	c, err := client.New(client.Options{Dialer: dial, ClientID: "bridge", CleanStart: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err)
	}
	defer c.Disconnect(ctx)

	acked := make(chan uint64, 3)
	for seq := uint64(1); seq <= 3; seq++ {
		m := &client.Message{Topic: "site/1/readings", Payload: fmt.Appendf(nil, "reading %d", seq), QoS: 1}
		c.PublishAsync(m, func(err error) {
			if err != nil {
				return // keep it stored; it goes again later
			}
			acked <- seq // must not block: hand over and return
		})
	}
	for range 3 {
		fmt.Println("delete", <-acked, "from the store")
	}
	// Output:
	// delete 1 from the store
	// delete 2 from the store
	// delete 3 from the store
}

// Options for an upstream bridge to AWS IoT Core over port 443: TLS with a
// device certificate, SNI and the ALPN protocol AWS requires there, and
// reconnection with jittered backoff so that a fleet cut off together does
// not come back together.
func ExampleNewTLSConfig() {
	tlsCfg, err := client.NewTLSConfig(client.TLSFiles{
		CAFile:     "/etc/gatewayd/AmazonRootCA1.pem",
		CertFile:   "/etc/gatewayd/device.pem.crt",
		KeyFile:    "/etc/gatewayd/private.pem.key",
		ServerName: "a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com",
		NextProtos: []string{"x-amzn-mqtt-ca"},
	})
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(client.Options{
		URL:           "mqtts://a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com:443",
		TLS:           tlsCfg,
		ClientID:      "gateway-0042",
		Protocol:      5,
		SessionExpiry: time.Hour,
		AutoReconnect: true,
		Backoff:       client.Backoff{Base: time.Second, Cap: 5 * time.Minute},
		OnConnectionChange: func(s client.State, err error) {
			log.Printf("upstream %v: %v", s, err)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	_ = c // c.Connect(ctx) keeps trying until ctx ends
}

// A will tells subscribers that the gateway went away without saying goodbye.
func ExampleWill() {
	_, err := client.New(client.Options{
		URL:      "mqtt://127.0.0.1:1883",
		ClientID: "gateway-0042",
		Will: &client.Will{
			Message: client.Message{Topic: "gateways/0042/status", Payload: []byte("offline"), QoS: 1, Retain: true},
			Delay:   30 * time.Second, // MQTT 5: not for a blip shorter than this
		},
	})
	fmt.Println(err)
	// Output: <nil>
}
