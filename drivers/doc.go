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

// Configuration, as cmd decodes it (the section inline at the top level of
// the file, or under a key of cmd's choosing):
//
//	topic_prefix: gatewayd        # topics: <topic_prefix>/<gateway_id>/<device>/<channel>
//	payload: plain                # or json: {"value":21.4,"unit":"°C","ts":1700000000123}
//	homeassistant: {enabled: true, prefix: homeassistant}
//	broker_url: ""                # empty: the embedded broker, in process
//	devices:
//	  - {name: porch, driver: bme280, bus: "1", address: 0x76, interval: 30s,
//	     channels: {temperature: {offset: -0.5, precision: 1}}}
//	  - {name: door, driver: gpio-in, pin: P1-11, pull: up, debounce: 50ms}
//	  - {name: heater, driver: gpio-out, pin: GPIO27, initial: "off", safe_state: "off", safe_after: 1m}
//
// Wiring, in cmd:
//
//	b := board.New("/")
//	defer b.Close()
//	info := b.Info()
//	r, err := drivers.NewRunner(cfg, gatewayID, b, inProcessDial,
//		drivers.BoardInfo{Model: info.Model, Serial: info.Serial}, logger)
//	...
//	go r.Run(ctx) // returns once every device is offline and outputs are safe
//
// where inProcessDial hands the embedded broker one end of a net.Pipe
// (broker.Server.ServeConn), or is nil to use broker_url.
