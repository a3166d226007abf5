package main

import (
	"errors"
	"os"
	"strings"

	"gatewayd/bridge"
	"gatewayd/broker"
	"gatewayd/broker/state"
	"gatewayd/config"
	"gatewayd/drivers"
	"gatewayd/metrics"
)

// Config is the whole gatewayd configuration file. Each section is the config
// struct of the package it configures; this one only assembles them.
type Config struct {
	// GatewayID names this gateway; it defaults to the host name.
	GatewayID string `yaml:"gateway_id"`
	// DataDir holds the state that outlives the process. It is created (mode
	// 0700) if missing; a relative path is relative to the working directory.
	DataDir string `yaml:"data_dir"`
	// Store configures the broker's durable store, kept in <data_dir>/store.
	Store  state.Config  `yaml:"store"`
	Log    LogConfig     `yaml:"log"`
	Broker broker.Config `yaml:"broker"`
	// Metrics configures the Prometheus endpoint; off unless an address is set.
	Metrics metrics.Config `yaml:"metrics"`
	// Bridges forward to cloud brokers; they start after the broker and
	// stop before it.
	Bridges bridge.Configs `yaml:"bridges"`

	// The drivers section (drivers.Config), at the top level of the file:
	// devices and how their readings are published.
	TopicPrefix   string                      `yaml:"topic_prefix"`
	Payload       string                      `yaml:"payload"`
	HomeAssistant drivers.HomeAssistantConfig `yaml:"homeassistant"`
	BrokerURL     string                      `yaml:"broker_url"`
	Devices       []drivers.DeviceConfig      `yaml:"devices"`
}

// Drivers is the drivers section as package drivers takes it.
func (c *Config) Drivers() drivers.Config {
	return drivers.Config{TopicPrefix: c.TopicPrefix, Payload: c.Payload, HomeAssistant: c.HomeAssistant,
		BrokerURL: c.BrokerURL, Devices: c.Devices}
}

// LogConfig configures gatewayd's own log (stderr).
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // text or json
}

// DefaultConfig is the configuration before any file is read.
func DefaultConfig() Config {
	id, err := os.Hostname()
	if err != nil || id == "" {
		id = "gatewayd"
	}
	d := drivers.DefaultConfig()
	return Config{
		GatewayID:     hostID(id),
		DataDir:       "./data",
		Log:           LogConfig{Level: "info", Format: "text"},
		Broker:        broker.DefaultConfig(),
		TopicPrefix:   d.TopicPrefix,
		Payload:       d.Payload,
		HomeAssistant: d.HomeAssistant,
	}
}

// Validate checks every section; errors are *config.FieldError with full key
// paths such as "broker.listeners[0].address".
func (c *Config) Validate() error {
	var errs []error
	switch {
	case c.GatewayID == "":
		errs = append(errs, config.Errorf("gateway_id", "must not be empty"))
	case strings.ContainsAny(c.GatewayID, "/+#\x00"):
		// The id becomes a topic level (in $SYS and upstream topics).
		errs = append(errs, config.Errorf("gateway_id", "%q must not contain '/', '+', '#' or NUL", c.GatewayID))
	}
	if c.DataDir == "" {
		errs = append(errs, config.Errorf("data_dir", "must not be empty"))
	}
	errs = append(errs, config.Prefix("store", c.Store.Validate()))
	errs = append(errs, config.Prefix("log", c.Log.Validate()))
	errs = append(errs, config.Prefix("broker", c.Broker.Validate()))
	errs = append(errs, config.Prefix("bridges", c.Bridges.Validate()))
	d := c.Drivers()
	errs = append(errs, d.Validate())
	errs = append(errs, config.Prefix("metrics", c.Metrics.Validate()))
	return errors.Join(errs...)
}

// Validate checks the level and format names.
func (c *LogConfig) Validate() error {
	var errs []error
	if _, ok := parseLevel(c.Level); !ok {
		errs = append(errs, config.Errorf("level", "%q is not one of debug, info, warn, error", c.Level))
	}
	if c.Format != "text" && c.Format != "json" {
		errs = append(errs, config.Errorf("format", "%q is not one of text, json", c.Format))
	}
	return errors.Join(errs...)
}

// hostID makes a host name a gateway id devices can use (a topic level and
// Home Assistant node_id: letters, digits, '_' and '-'): its first label,
// other characters replaced by '-'.
func hostID(host string) string {
	host, _, _ = strings.Cut(host, ".")
	id := []byte(host)
	for i, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			id[i] = '-'
		}
	}
	if len(id) == 0 {
		return "gatewayd"
	}
	return string(id)
}
