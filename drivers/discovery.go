package drivers

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"gatewayd/broker/client"
)

// Home Assistant MQTT discovery.
//
// Every channel of every device is announced with a retained config message
// at <prefix>/<component>/<gateway_id>/<device>_<channel>/config (the
// channel name made to fit an object id: see objectID), published
// by one extra client, gatewayd-<gateway_id>-discovery, which also announces
// the gateway itself (a connectivity binary_sensor whose availability is that
// client's will) so that each device's via_device points at a real device.
//
// Removed devices and channels: the broker's retained messages are the
// record of what was announced, so nothing is kept on the gateway's disk. The
// discovery client subscribes to <prefix>/+/<gateway_id>/+/config, collects
// the retained configs, and, once a marker it publishes to itself has come
// back (retained messages are delivered before it), clears with an empty
// retained message every config whose object id belongs to no configured
// device. A configured device's configs for channels it no longer has are
// cleared when the device is announced. Configs published by anything else
// under the same node id are cleared too: the node id is the gateway's, and
// this client owns it.
//
// All configs are published again whenever <prefix>/status says online
// (Home Assistant restarted and lost its non-retained state).

// DiscoveryConfig is one discovery config payload.
type DiscoveryConfig struct {
	Name                      string           `json:"name"`
	UniqueID                  string           `json:"unique_id"`
	StateTopic                string           `json:"state_topic"`
	CommandTopic              string           `json:"command_topic,omitempty"`
	UnitOfMeasurement         string           `json:"unit_of_measurement,omitempty"`
	DeviceClass               string           `json:"device_class,omitempty"`
	StateClass                string           `json:"state_class,omitempty"`
	ValueTemplate             string           `json:"value_template,omitempty"`
	PayloadOn                 string           `json:"payload_on,omitempty"`
	PayloadOff                string           `json:"payload_off,omitempty"`
	StateOn                   string           `json:"state_on,omitempty"`
	StateOff                  string           `json:"state_off,omitempty"`
	SuggestedDisplayPrecision *int             `json:"suggested_display_precision,omitempty"`
	AvailabilityTopic         string           `json:"availability_topic"`
	PayloadAvailable          string           `json:"payload_available"`
	PayloadNotAvailable       string           `json:"payload_not_available"`
	Device                    DiscoveryDevice  `json:"device"`
	Origin                    *DiscoveryOrigin `json:"origin,omitempty"`
}

// DiscoveryDevice is the device block of a discovery config.
type DiscoveryDevice struct {
	Identifiers   []string `json:"identifiers"`
	Name          string   `json:"name"`
	Model         string   `json:"model,omitempty"`
	Manufacturer  string   `json:"manufacturer"`
	SerialNumber  string   `json:"serial_number,omitempty"`
	SuggestedArea string   `json:"suggested_area,omitempty"`
	ViaDevice     string   `json:"via_device,omitempty"`
}

// DiscoveryOrigin names the software that announced an entity.
type DiscoveryOrigin struct {
	Name string `json:"name"`
}

type discovery struct {
	r      *Runner
	prefix string

	mu        sync.Mutex
	cl        *client.Client
	announced map[*deviceRun]map[string][]byte // device -> config topic -> payload
	seen      map[string]bool                  // retained config topics under our node id
	ready     bool                             // subscribed: configs may be published
	synced    bool
}

func newDiscovery(r *Runner) *discovery {
	return &discovery{
		r:         r,
		prefix:    r.cfg.HomeAssistant.Prefix,
		announced: map[*deviceRun]map[string][]byte{},
		seen:      map[string]bool{},
	}
}

func (r *Runner) gatewayIdent() string { return "gatewayd_" + r.gatewayID }

func (x *discovery) gatewayStatusTopic() string {
	return x.r.cfg.TopicPrefix + "/" + x.r.gatewayID + "/_gateway/status"
}

func (x *discovery) syncTopic() string {
	return x.r.cfg.TopicPrefix + "/" + x.r.gatewayID + "/_gateway/discovery-sync"
}

func (x *discovery) run(ctx context.Context) {
	cl, err := x.r.newClient(x.r.ClientID("discovery"), x.gatewayStatusTopic(), func(s client.State, _ error) {
		if s == client.StateConnected {
			x.mu.Lock()
			c := x.cl
			x.mu.Unlock()
			if c != nil {
				c.PublishAsync(&client.Message{Topic: x.gatewayStatusTopic(), Payload: []byte(Online), QoS: 1, Retain: true}, nil)
			}
		}
	})
	if err != nil {
		x.r.log.Error("discovery client", "err", err)
		return
	}
	x.mu.Lock()
	x.cl = cl
	x.mu.Unlock()
	if err := cl.Connect(ctx); err != nil {
		return
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_ = cl.Publish(sctx, &client.Message{Topic: x.gatewayStatusTopic(), Payload: []byte(Offline), QoS: 1, Retain: true})
		_ = cl.Disconnect(sctx)
	}()
	subs := []client.Subscription{
		{Filter: x.syncTopic(), QoS: 1},
		{Filter: x.prefix + "/+/" + x.r.gatewayID + "/+/config", QoS: 1},
		{Filter: x.prefix + "/status", QoS: 1},
	}
	for n := 0; ; n++ {
		if _, err = cl.Subscribe(ctx, x.handle, subs...); err == nil {
			break
		}
		if !sleep(ctx, backoff(time.Second, n)) {
			return
		}
	}
	x.mu.Lock()
	x.ready = true
	x.mu.Unlock()
	x.republish()
	cl.PublishAsync(&client.Message{Topic: x.syncTopic(), Payload: []byte("sync"), QoS: 1}, nil)
	<-ctx.Done()
}

func (x *discovery) handle(m *client.Message) {
	switch {
	case m.Topic == x.syncTopic():
		x.mu.Lock()
		x.synced = true
		x.mu.Unlock()
		x.sweep()
	case m.Topic == x.prefix+"/status":
		if strings.EqualFold(strings.TrimSpace(string(m.Payload)), "online") {
			x.republish()
		}
	default:
		x.mu.Lock()
		if len(m.Payload) == 0 {
			delete(x.seen, m.Topic)
		} else {
			x.seen[m.Topic] = true
		}
		x.mu.Unlock()
	}
}

// announce publishes (again) the configs of d's channels.
func (x *discovery) announce(d *deviceRun) {
	cfgs := x.r.discoveryConfigs(d)
	x.mu.Lock()
	x.announced[d] = cfgs
	synced, ready := x.synced, x.ready
	x.mu.Unlock()
	if !ready {
		return // published once subscribed
	}
	x.publish(cfgs)
	if synced {
		x.sweep()
	}
}

func (x *discovery) publish(cfgs map[string][]byte) {
	x.mu.Lock()
	cl := x.cl
	x.mu.Unlock()
	if cl == nil {
		return
	}
	topics := make([]string, 0, len(cfgs))
	for t := range cfgs {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	for _, t := range topics {
		cl.PublishAsync(&client.Message{Topic: t, Payload: cfgs[t], QoS: 1, Retain: true}, nil)
	}
}

func (x *discovery) publishGateway() {
	x.publish(x.r.gatewayConfig())
}

func (x *discovery) republish() {
	x.publishGateway()
	x.mu.Lock()
	var all []map[string][]byte
	for _, c := range x.announced {
		all = append(all, c)
	}
	x.mu.Unlock()
	for _, c := range all {
		x.publish(c)
	}
}

// sweep clears retained configs under the gateway's node id that nothing
// current stands for: devices no longer configured, channels a device no
// longer has. A configured device not yet opened keeps its configs.
func (x *discovery) sweep() {
	keep := map[string]bool{}
	for t := range x.r.gatewayConfig() {
		keep[t] = true
	}
	x.mu.Lock()
	for _, c := range x.announced {
		for t := range c {
			keep[t] = true
		}
	}
	var clear []string
	for t := range x.seen {
		if keep[t] {
			continue
		}
		owner := x.owner(t)
		if owner != nil {
			if _, done := x.announced[owner]; !done {
				continue // not opened yet: its channels are unknown
			}
		}
		clear = append(clear, t)
	}
	for _, t := range clear {
		delete(x.seen, t)
	}
	cl := x.cl
	x.mu.Unlock()
	slices.Sort(clear)
	for _, t := range clear {
		x.r.log.Info("clearing Home Assistant config of a removed channel", "topic", t)
		cl.PublishAsync(&client.Message{Topic: t, Payload: nil, QoS: 1, Retain: true}, nil)
	}
}

// owner returns the configured device whose name is the longest prefix of
// the config topic's object id (<device>_<channel>), or nil.
func (x *discovery) owner(topic string) *deviceRun {
	parts := strings.Split(topic, "/")
	if len(parts) < 2 {
		return nil
	}
	obj := parts[len(parts)-2]
	var best *deviceRun
	for _, d := range x.r.devs {
		if strings.HasPrefix(obj, d.cfg.Name+"_") && (best == nil || len(d.cfg.Name) > len(best.cfg.Name)) {
			if d.cfg.HomeAssistant.Disabled {
				continue
			}
			best = d
		}
	}
	return best
}

// ConfigTopic returns the discovery config topic of an entity.
func (r *Runner) ConfigTopic(component Component, objectID string) string {
	return r.cfg.HomeAssistant.Prefix + "/" + string(component) + "/" + r.gatewayID + "/" + objectID + "/config"
}

func (r *Runner) gatewayConfig() map[string][]byte {
	x := r.disc
	c := DiscoveryConfig{
		Name:                "Devices",
		UniqueID:            r.gatewayIdent() + "_devices",
		StateTopic:          x.gatewayStatusTopic(),
		DeviceClass:         "connectivity",
		PayloadOn:           Online,
		PayloadOff:          Offline,
		AvailabilityTopic:   x.gatewayStatusTopic(),
		PayloadAvailable:    Online,
		PayloadNotAvailable: Offline,
		Device: DiscoveryDevice{
			Identifiers:  []string{r.gatewayIdent()},
			Name:         r.gatewayID,
			Model:        r.board.Model,
			Manufacturer: "gatewayd",
			SerialNumber: r.board.Serial,
		},
		Origin: &DiscoveryOrigin{Name: "gatewayd"},
	}
	b, _ := json.Marshal(c)
	return map[string][]byte{r.ConfigTopic(ComponentBinarySensor, "gateway"): b}
}

// discoveryConfigs builds the config payloads of d's channels, by topic.
func (r *Runner) discoveryConfigs(d *deviceRun) map[string][]byte {
	out := map[string][]byte{}
	dev := DiscoveryDevice{
		Identifiers:   []string{r.gatewayIdent() + "_" + d.cfg.Name},
		Name:          cmpOr(d.cfg.HomeAssistant.Name, d.cfg.Name),
		Model:         cmpOr(d.cfg.HomeAssistant.Model, d.cfg.Driver),
		Manufacturer:  "gatewayd",
		SuggestedArea: d.cfg.HomeAssistant.Area,
		ViaDevice:     r.gatewayIdent(),
	}
	// Channels whose names fit an object id as they are come first, so that
	// one whose name objectID changed into another's gets the suffix.
	chans := d.channels()
	slices.SortStableFunc(chans, func(a, b ChannelInfo) int {
		return cmpBool(objectID(a.Channel) != a.Channel, objectID(b.Channel) != b.Channel)
	})
	for _, ch := range chans {
		comp := ch.Component
		if comp == "" {
			comp = ComponentSensor
		}
		obj := d.cfg.Name + "_" + objectID(ch.Channel)
		if _, taken := out[r.ConfigTopic(comp, obj)]; taken {
			// Two channel names that differ only in characters objectID
			// replaces: the changed one gets a suffix of its own.
			h := fnv.New32a()
			h.Write([]byte(ch.Channel))
			obj += fmt.Sprintf("_%08x", h.Sum32())
		}
		c := DiscoveryConfig{
			Name:                cmpOr(ch.Name, ch.Channel),
			UniqueID:            r.gatewayIdent() + "_" + obj,
			StateTopic:          d.topic + "/" + ch.Channel,
			AvailabilityTopic:   d.statusTopic(),
			PayloadAvailable:    Online,
			PayloadNotAvailable: Offline,
			DeviceClass:         ch.DeviceClass,
			Device:              dev,
			Origin:              &DiscoveryOrigin{Name: "gatewayd"},
		}
		switch comp {
		case ComponentSensor:
			c.UnitOfMeasurement = ch.Unit
			c.StateClass = ch.StateClass
			if ch.Precision >= 0 {
				p := ch.Precision
				c.SuggestedDisplayPrecision = &p
			}
		case ComponentBinarySensor:
			c.PayloadOn, c.PayloadOff = "ON", "OFF"
		case ComponentSwitch:
			c.CommandTopic = d.topic + "/set"
			c.PayloadOn, c.PayloadOff = "ON", "OFF"
			c.StateOn, c.StateOff = "ON", "OFF"
		}
		if r.cfg.Payload == PayloadJSON {
			c.ValueTemplate = "{{ value_json.value }}"
		}
		b, _ := json.Marshal(c)
		out[r.ConfigTopic(comp, obj)] = b
	}
	return out
}

// objectID makes a channel name fit a discovery object id, which Home
// Assistant takes only of letters, digits, '_' and '-' (it ignores a config
// on any other topic): every other character becomes '_'. A network
// interface eth0.100 gives net_rx_eth0_100; the state topic keeps the name.
func objectID(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '-' || r < utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return '_'
	}, name)
}

// cmpBool orders false before true.
func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

func sortInfos(in []ChannelInfo) {
	slices.SortFunc(in, func(a, b ChannelInfo) int { return strings.Compare(a.Channel, b.Channel) })
}
