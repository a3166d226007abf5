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
// The bridge takes a window of messages (max_inflight) from it at a time,
// publishes them to the cloud in queue order without waiting for each
// acknowledgement, and acknowledges each locally (which removes it from the
// queue) only when the cloud has acknowledged it, or has refused it for good
// (counted). Local acknowledgements leave in the order the messages came, as
// MQTT requires. When the link drops, the messages in flight are sent again
// first, in order, before any newer one; what the cloud had already received
// of them arrives twice, as QoS 1 allows. Coming in, up to a window of cloud
// messages are on their way to the local broker at once; each is
// acknowledged to the cloud, in arrival order, once the local broker has
// stored it.
//
// What the bridge must never do: acknowledge a local message before the cloud
// has it (QoS 1/2) or the bridge has counted why it never will, acknowledge a
// cloud message before the local broker has stored it, or send a message it
// received from the cloud back to the cloud.
package bridge
