package state

import "gatewayd/config"

// Config is the store section of the configuration file (store: next to
// data_dir). The store itself lives in <data_dir>/store.
type Config struct {
	// MaxBytes caps the broker's live stored data (sessions, queued and
	// retained messages, wills), in bytes; what would go beyond it is refused
	// (v5 reason 0x97, Quota exceeded). The files take at most about three
	// times this plus 4 MiB. 0 means DefaultMaxBytes (64 MiB).
	MaxBytes int64 `yaml:"max_bytes"`
}

// Validate checks c; keys are relative to the store section.
func (c *Config) Validate() error {
	if c.MaxBytes < 0 {
		return config.Errorf("max_bytes", "%d is negative (0 means the default, %d)", c.MaxBytes, DefaultMaxBytes)
	}
	if c.MaxBytes > 0 && c.MaxBytes < 64<<10 {
		return config.Errorf("max_bytes", "%d is below the minimum of 65536", c.MaxBytes)
	}
	return nil
}

// Options returns the DurableOptions c stands for.
func (c *Config) Options() DurableOptions { return DurableOptions{MaxBytes: c.MaxBytes} }
