// Package drivers turns sensors, inputs and outputs attached to the gateway
// into MQTT topics on the gateway's broker.
//
// A driver is registered under a name (Register) and opened from one entry of
// the `devices` configuration list (DeviceConfig). It sees hardware only
// through periph.io conn interfaces handed to it by a Hardware (i2c.Bus,
// gpio.PinIO, a serial port, the 1-Wire sysfs directory), so every driver runs
// on any board and is tested against periph's test doubles. Finding and
// opening the hardware is package board's job; this package must never import
// it.
//
// A device is one of three kinds:
//
//   - Sensor: polled every interval (Read).
//   - Source: event driven (Run, emitting readings as they happen).
//   - Output: commanded through <topic>/set (Set), with a safe state applied
//     on shutdown and when the broker has been unreachable for safe_after.
//
// The Runner connects each device to the broker as its own MQTT client
// (client id gatewayd-<gateway_id>-<device>), keeps a retained availability
// topic <topic>/status (online, or offline through the client's will),
// publishes each reading to <topic>/<channel> after the channel's scale and
// offset, and announces every channel and output to Home Assistant through
// MQTT discovery. One device failing never stops another.
package drivers
