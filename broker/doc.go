// Package broker is gatewayd's embedded MQTT broker (MQTT 3.1, 3.1.1 and 5.0):
// the hub that sensor drivers, local applications and the upstream bridge
// publish to and subscribe through on the gateway.
//
// Plain TCP connections are served by one epoll loop (event_loop, see
// loop_linux.go): it reads what every ready client sent, decodes the packets
// and routes each PUBLISH straight into the subscribers' output buffers, then
// writes each client's output with one non-blocking write; a connection costs
// no goroutine. CONNECT is handled off the loop, and a publisher that has to
// wait for a slow subscriber hands the loop to a fresh goroutine first, so
// nothing on the loop ever blocks. TLS, WebSocket and in-process connections
// (and plain TCP ones with event_loop: false) are one reader goroutine each
// that does the same, and a writer goroutine that exists only while output is
// pending; a QoS 0 message that follows a quiet spell goes to one
// subscriber's plain TCP socket inline, and the writer starts only for what
// the socket does not take at once. Sessions (subscriptions, queued and
// in-flight QoS 1/2 messages, wills) live in memory; every change that must
// survive a restart is described to a state.Store, and a PUBACK or PUBREC for a
// message that had to be stored is sent only once the store reports it durable
// (so is the PUBCOMP that frees a stored QoS 2 packet id). A will is deleted
// from the store in the batch that queues it for its subscribers, so that a
// power cut leaves both or neither.
//
// Each listener is MQTT over TCP or over WebSocket, either with TLS; every
// connection, in-process ones handed to ServeConn included, goes through the
// same authentication (password_file, client certificates, or an embedded
// Authenticator), the same ACL on every PUBLISH, SUBSCRIBE and delivery, and
// the same limits (connections, connection rate per address, subscriptions,
// retained messages), each refusal answered with its reason code where the
// protocol has one and counted in Stats.
//
// The broker must never let an anonymous client in through a listener on a
// non-loopback address unless that listener says allow_anonymous: true,
// never keep a client's password after checking it, and never hold a lock
// while a failed login is made to wait.
//
// A publisher faster than a subscriber is slowed down rather than losing
// messages: the routing goroutine waits, holding no lock, for the
// subscriber's output to make room in its output buffer (QoS 0) or for its
// queue to shrink (QoS 1/2), for as long as the subscriber makes progress at
// least every slow_consumer_wait; the publisher's
// unread packets then throttle it through TCP. A subscriber that makes no
// progress within one wait is marked stalled and its QoS 0 messages are
// dropped (counted) without waiting until it makes progress again.
//
// The broker must never acknowledge a message before the store has it, never
// let one slow or dead client block a publisher or any other client, never
// grow a queue or buffer beyond its configured bound (what does not fit is
// dropped and counted), and never let one client's malformed packet affect
// anything but that client's own connection.
package broker
