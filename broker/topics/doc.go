// Package topics holds the broker's subscription index and retained-message
// index, and the MQTT rules for matching topic names against topic filters
// (MQTT 3.1.1 and 5.0, section 4.7).
//
// It is on the path of every PUBLISH: matching must not allocate in the
// steady state and must never block on anything but the index's own lock.
// It must never depend on other gatewayd packages, never do I/O, and never
// call back into the broker while holding a lock except through the
// callbacks documented on each method.
package topics
