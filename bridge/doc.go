// Package bridge forwards messages between gatewayd's embedded broker and a
// cloud MQTT broker (AWS IoT Core, Azure IoT Hub, HiveMQ, EMQX, Mosquitto),
// and keeps readings while the uplink is down.
//
// A bridge is an MQTT client of the embedded broker, connected in-process,
// with a persistent session and QoS 1 subscriptions for its out rules. The
// broker therefore queues every matching message for the bridge in its
// durable store before it acknowledges the publisher; that queue is the
// bridge's store-and-forward buffer, bounded by the bridge's queue policy
// (broker.ClientPolicy), and it survives restarts and kill -9 with the store.
// The bridge takes one message at a time from it, publishes it to the cloud,
// and acknowledges it locally (which removes it from the queue) only when the
// cloud has acknowledged it, or has refused it for good (counted). Order is
// kept because only one message is in flight at a time, in both directions
// of the chain.
//
// What the bridge must never do: acknowledge a local message before the cloud
// has it (QoS 1/2) or the bridge has counted why it never will, acknowledge a
// cloud message before the local broker has stored it, or send a message it
// received from the cloud back to the cloud.
package bridge
