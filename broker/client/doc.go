// Package client is gatewayd's MQTT client: the one used by the upstream
// bridge, the sensor drivers and gatewayctl. It speaks MQTT 3.1.1 and 5.0 over
// TCP, TLS, WebSocket and secure WebSocket, or over any net.Conn a Dialer hands
// it (net.Pipe for in-process users).
//
// A Client keeps one session: QoS 1 and 2 messages not yet acknowledged survive
// a lost connection and are sent again (with DUP set) when the client comes
// back, within the server's Receive Maximum. When the server has lost the
// session, the client subscribes again to everything it had subscribed to,
// and it keeps doing so at each connection until the server has acknowledged
// those subscriptions (a connection that failed in between may have left a
// session without them). A Subscribe whose connection is lost before the
// SUBACK fails with ErrConnectionLost and is not sent again: the caller
// decides. Received messages are passed to
// handlers in the order they arrived, one at a time, on a single goroutine per
// client.
//
// What the package must never do: acknowledge a received QoS 1 or 2 message
// before its handler has returned (with Options.ManualAck: before the
// application has called its Ack), send acknowledgements out of the order
// the messages arrived in, deliver a received QoS 2 message twice
// within a session, or reuse a packet identifier that is still in flight.
package client
