package drivers

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/client"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// haConfig is the discovery schema the Runner documents, decoded on its own
// (not through DiscoveryConfig) so the test checks the wire format.
type haConfig struct {
	Name                      string `json:"name"`
	UniqueID                  string `json:"unique_id"`
	StateTopic                string `json:"state_topic"`
	CommandTopic              string `json:"command_topic"`
	UnitOfMeasurement         string `json:"unit_of_measurement"`
	DeviceClass               string `json:"device_class"`
	StateClass                string `json:"state_class"`
	ValueTemplate             string `json:"value_template"`
	PayloadOn                 string `json:"payload_on"`
	PayloadOff                string `json:"payload_off"`
	StateOn                   string `json:"state_on"`
	StateOff                  string `json:"state_off"`
	SuggestedDisplayPrecision *int   `json:"suggested_display_precision"`
	AvailabilityTopic         string `json:"availability_topic"`
	PayloadAvailable          string `json:"payload_available"`
	PayloadNotAvailable       string `json:"payload_not_available"`
	Device                    struct {
		Identifiers   []string `json:"identifiers"`
		Name          string   `json:"name"`
		Model         string   `json:"model"`
		Manufacturer  string   `json:"manufacturer"`
		SerialNumber  string   `json:"serial_number"`
		SuggestedArea string   `json:"suggested_area"`
		ViaDevice     string   `json:"via_device"`
	} `json:"device"`
}

func decodeHA(t *testing.T, m msg) haConfig {
	t.Helper()
	var c haConfig
	if err := json.Unmarshal([]byte(m.Payload), &c); err != nil {
		t.Fatalf("%s: %q: %v", m.Topic, m.Payload, err)
	}
	return c
}

func check[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func discoveryConfig(hw *fakeHardware) Config {
	cfg := DefaultConfig()
	cfg.HomeAssistant.Enabled = true
	cfg.Devices = []DeviceConfig{
		{Name: "porch", Driver: "test-sensor", Interval: time.Hour,
			HomeAssistant: DeviceHomeAssistant{Name: "Porch climate", Area: "Porch"},
			Channels:      map[string]ChannelConfig{"temperature": {Name: "Porch temperature", Precision: ptr(1)}}},
		{Name: "door", Driver: "gpio-in", Pin: "GPIO17", Pull: "up"},
		{Name: "relay", Driver: "gpio-out", Pin: "GPIO27"},
	}
	return cfg
}

func discoveryHardware() *fakeHardware {
	return &fakeHardware{pins: map[string]gpio.PinIO{
		"GPIO17": &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level, 8)},
		"GPIO27": &gpiotest.Pin{N: "GPIO27", Num: 27},
	}}
}

func TestDiscoveryConfigsFieldByField(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	useTestSensor(t, "porch", tempSensor(20))
	sub := subscribe(t, b, "homeassistant/#")
	hw := discoveryHardware()
	startRunner(t, b, discoveryConfig(hw), hw)

	m, _ := sub.next(0, "homeassistant/sensor/gw1/porch_temperature/config")
	c := decodeHA(t, m)
	if !m.Retain {
		// a live message is delivered without retain unless published so:
		// the subscriber asks for retain as published.
		t.Errorf("sensor config not retained")
	}
	check(t, "name", c.Name, "Porch temperature")
	check(t, "unique_id", c.UniqueID, "gatewayd_gw1_porch_temperature")
	check(t, "state_topic", c.StateTopic, "gatewayd/gw1/porch/temperature")
	check(t, "command_topic", c.CommandTopic, "")
	check(t, "unit_of_measurement", c.UnitOfMeasurement, "°C")
	check(t, "device_class", c.DeviceClass, "temperature")
	check(t, "state_class", c.StateClass, "measurement")
	check(t, "value_template", c.ValueTemplate, "")
	if c.SuggestedDisplayPrecision == nil || *c.SuggestedDisplayPrecision != 1 {
		t.Errorf("suggested_display_precision = %v, want 1", c.SuggestedDisplayPrecision)
	}
	check(t, "availability_topic", c.AvailabilityTopic, "gatewayd/gw1/porch/status")
	check(t, "payload_available", c.PayloadAvailable, "online")
	check(t, "payload_not_available", c.PayloadNotAvailable, "offline")
	if len(c.Device.Identifiers) != 1 || c.Device.Identifiers[0] != "gatewayd_gw1_porch" {
		t.Errorf("device.identifiers = %v", c.Device.Identifiers)
	}
	check(t, "device.name", c.Device.Name, "Porch climate")
	check(t, "device.model", c.Device.Model, "test-sensor")
	check(t, "device.manufacturer", c.Device.Manufacturer, "gatewayd")
	check(t, "device.suggested_area", c.Device.SuggestedArea, "Porch")
	check(t, "device.via_device", c.Device.ViaDevice, "gatewayd_gw1")

	m, _ = sub.next(0, "homeassistant/binary_sensor/gw1/door_state/config")
	c = decodeHA(t, m)
	check(t, "door name", c.Name, "state")
	check(t, "door unique_id", c.UniqueID, "gatewayd_gw1_door_state")
	check(t, "door state_topic", c.StateTopic, "gatewayd/gw1/door/state")
	check(t, "door payload_on", c.PayloadOn, "ON")
	check(t, "door payload_off", c.PayloadOff, "OFF")
	check(t, "door availability_topic", c.AvailabilityTopic, "gatewayd/gw1/door/status")
	check(t, "door device.model", c.Device.Model, "gpio-in")
	m, _ = sub.next(0, "homeassistant/sensor/gw1/door_count/config")
	c = decodeHA(t, m)
	check(t, "door count state_class", c.StateClass, "total_increasing")

	m, _ = sub.next(0, "homeassistant/switch/gw1/relay_state/config")
	c = decodeHA(t, m)
	check(t, "relay unique_id", c.UniqueID, "gatewayd_gw1_relay_state")
	check(t, "relay state_topic", c.StateTopic, "gatewayd/gw1/relay/state")
	check(t, "relay command_topic", c.CommandTopic, "gatewayd/gw1/relay/set")
	check(t, "relay payload_on", c.PayloadOn, "ON")
	check(t, "relay payload_off", c.PayloadOff, "OFF")
	check(t, "relay state_on", c.StateOn, "ON")
	check(t, "relay state_off", c.StateOff, "OFF")
	check(t, "relay availability_topic", c.AvailabilityTopic, "gatewayd/gw1/relay/status")
	check(t, "relay device.via_device", c.Device.ViaDevice, "gatewayd_gw1")

	m, _ = sub.next(0, "homeassistant/binary_sensor/gw1/gateway/config")
	c = decodeHA(t, m)
	check(t, "gateway unique_id", c.UniqueID, "gatewayd_gw1_devices")
	check(t, "gateway device_class", c.DeviceClass, "connectivity")
	check(t, "gateway device.identifiers", c.Device.Identifiers[0], "gatewayd_gw1")
	check(t, "gateway device.model", c.Device.Model, "Raspberry Pi 4 Model B Rev 1.4")
	check(t, "gateway device.serial_number", c.Device.SerialNumber, "10000000abcdef01")
	check(t, "gateway device.manufacturer", c.Device.Manufacturer, "gatewayd")
}

func TestDiscoveryJSONPayloadHasValueTemplate(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	useTestSensor(t, "porch", tempSensor(20))
	sub := subscribe(t, b, "homeassistant/#")
	hw := discoveryHardware()
	cfg := discoveryConfig(hw)
	cfg.Payload = PayloadJSON
	startRunner(t, b, cfg, hw)
	for _, topic := range []string{
		"homeassistant/sensor/gw1/porch_temperature/config",
		"homeassistant/binary_sensor/gw1/door_state/config",
		"homeassistant/switch/gw1/relay_state/config",
	} {
		m, _ := sub.next(0, topic)
		check(t, topic+" value_template", decodeHA(t, m).ValueTemplate, "{{ value_json.value }}")
	}
}

func TestDiscoveryResentWhenHomeAssistantComesOnline(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	useTestSensor(t, "porch", tempSensor(20))
	sub := subscribe(t, b, "homeassistant/sensor/gw1/porch_temperature/config")
	hw := discoveryHardware()
	startRunner(t, b, discoveryConfig(hw), hw)
	first, i := sub.next(0, "homeassistant/sensor/gw1/porch_temperature/config")

	ha, err := client.New(client.Options{Dialer: b.dial, ClientID: "home-assistant", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := ha.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer ha.Disconnect(ctx)
	if err := ha.Publish(ctx, &client.Message{Topic: "homeassistant/status", Payload: []byte("online"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	again, _ := sub.next(i+1, "homeassistant/sensor/gw1/porch_temperature/config")
	if again.Payload != first.Payload {
		t.Errorf("re-sent config differs:\n%s\n%s", first.Payload, again.Payload)
	}
}

func TestDiscoveryClearsConfigsOfRemovedDevicesAndChannels(t *testing.T) {
	noLeaks(t)
	b := startBroker(t)
	// What an earlier configuration announced: a device since removed, and a
	// channel porch no longer has.
	old, err := client.New(client.Options{Dialer: b.dial, ClientID: "earlier-run", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := old.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	stale := []string{
		"homeassistant/sensor/gw1/cellar_temperature/config",
		"homeassistant/sensor/gw1/porch_humidity/config",
	}
	for _, topic := range stale {
		if err := old.Publish(ctx, &client.Message{Topic: topic, Payload: []byte(`{"name":"x"}`), QoS: 1, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	// another gateway's config is not ours to clear
	if err := old.Publish(ctx, &client.Message{Topic: "homeassistant/sensor/gw2/cellar_temperature/config", Payload: []byte(`{"name":"y"}`), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	old.Disconnect(ctx)

	useTestSensor(t, "porch", tempSensor(20))
	sub := subscribe(t, b, "homeassistant/sensor/+/+/config")
	hw := discoveryHardware()
	startRunner(t, b, discoveryConfig(hw), hw)
	for _, topic := range stale {
		sub.expect(0, topic, "")
	}
	sub.next(0, "homeassistant/sensor/gw1/porch_temperature/config")

	late := subscribe(t, b, "homeassistant/sensor/+/+/config")
	sub.expect(0, "homeassistant/sensor/gw1/porch_temperature/config", sub.payloads("homeassistant/sensor/gw1/porch_temperature/config")[0])
	late.next(0, "homeassistant/sensor/gw2/cellar_temperature/config")
	for _, topic := range stale {
		for _, p := range late.payloads(topic) {
			t.Errorf("%s is still retained: %q", topic, p)
		}
	}
}

// Home Assistant ignores a config whose object id holds anything but
// letters, digits, '_' and '-': a VLAN interface's channel is announced with
// the '.' replaced, its state topic unchanged; an interface whose name
// already reads that way keeps the plain id, and the other gets a suffix.
func TestDiscoveryObjectIDsFitHomeAssistant(t *testing.T) {
	noLeaks(t)
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"proc/uptime": "100.0 50.0\n",
		"proc/net/dev": "Inter-|   Receive                                                |  Transmit\n" +
			" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n" +
			"eth0.100:    1000      10    0    0    0     0          0         0     2000      10    0    0    0     0       0          0\n" +
			"eth0_100:    3000      10    0    0    0     0          0         0     4000      10    0    0    0     0       0          0\n",
	})
	b := startBroker(t)
	sub := subscribe(t, b, "homeassistant/#")
	cfg := DefaultConfig()
	cfg.HomeAssistant.Enabled = true
	cfg.Devices = []DeviceConfig{{Name: "system", Driver: "system", Interval: time.Hour}}
	startRunner(t, b, cfg, &ptyHardware{t: t, root: root})

	valid := regexp.MustCompile(`^homeassistant/[a-z_]+/gw1/[a-zA-Z0-9_-]+/config$`)
	states := map[string]string{} // state topic by config topic
	for len(states) < 3 {         // uptime and the two interfaces' rx
		m, _ := sub.waitFor(0, "configs of uptime and rx", func(m msg) bool {
			if _, seen := states[m.Topic]; seen || !strings.Contains(m.Topic, "/config") {
				return false
			}
			c := decodeHA(t, m)
			return strings.HasSuffix(c.StateTopic, "/uptime") || strings.Contains(c.StateTopic, "/net_rx_")
		})
		if !valid.MatchString(m.Topic) {
			t.Fatalf("config on %q: Home Assistant ignores that object id", m.Topic)
		}
		states[m.Topic] = decodeHA(t, m).StateTopic
	}
	check(t, "plain interface's config",
		states["homeassistant/sensor/gw1/system_net_rx_eth0_100/config"], "gatewayd/gw1/system/net_rx_eth0_100")
	var vlan string
	for topic, st := range states {
		if st == "gatewayd/gw1/system/net_rx_eth0.100" {
			vlan = topic
		}
	}
	if !regexp.MustCompile(`^homeassistant/sensor/gw1/system_net_rx_eth0_100_[0-9a-f]{8}/config$`).MatchString(vlan) {
		t.Fatalf("VLAN interface's config on %q, want system_net_rx_eth0_100 with a hash suffix (configs: %v)", vlan, states)
	}
}
