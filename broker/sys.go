package broker

import (
	"strconv"
	"sync/atomic"
	"time"

	"gatewayd/broker/state"
)

// counters are the broker's statistics, updated with atomics on the hot path.
type counters struct {
	connected    atomic.Int64
	disconnected atomic.Int64 // persistent sessions without a connection
	maxConnected atomic.Int64
	connects     atomic.Uint64 // connections accepted (CONNACK sent)
	disconnects  atomic.Uint64 // accepted connections that ended
	refused      atomic.Uint64
	msgsRecv     atomic.Uint64
	msgsSent     atomic.Uint64
	bytesRecv    atomic.Uint64
	bytesSent    atomic.Uint64
	// PUBLISH packets and their payload bytes by QoS (index 3 is never
	// used: the decoder refuses QoS 3, and &3 spares a bounds check).
	pubRecv         [4]atomic.Uint64
	pubSent         [4]atomic.Uint64
	pubBytesRecv    [4]atomic.Uint64
	pubBytesSent    [4]atomic.Uint64
	dropped         atomic.Uint64
	slowDrops       atomic.Uint64
	slowStalls      atomic.Uint64
	queueDrops      atomic.Uint64
	tooLarge        atomic.Uint64
	expired         atomic.Uint64
	queued          atomic.Int64
	protocolErrors  atomic.Uint64
	storeFailures   atomic.Uint64
	willsSent       atomic.Uint64
	expiredSessions atomic.Uint64
	authFailures    atomic.Uint64
	overLimit       atomic.Uint64
	rateLimited     atomic.Uint64
	subsRefused     atomic.Uint64
	retainedRefused atomic.Uint64
	publishDenied   atomic.Uint64
	subscribeDenied atomic.Uint64
}

func (c *counters) noteMaxConnected(n int64) {
	for {
		m := c.maxConnected.Load()
		if n <= m || c.maxConnected.CompareAndSwap(m, n) {
			return
		}
	}
}

// Stats are the broker's counters, as published under $SYS/broker (the
// names follow Mosquitto's).
type Stats struct {
	Uptime              time.Duration
	ClientsConnected    int64  // clients/connected
	ClientsDisconnected int64  // clients/disconnected: persistent sessions offline
	ClientsTotal        int64  // clients/total: connected plus disconnected
	ClientsMaximum      int64  // clients/maximum: most connected at once
	Connects            uint64 // connections accepted (CONNACK sent) since start
	Disconnects         uint64 // of those, the ones that ended, takeovers included
	MessagesReceived    uint64 // messages/received: packets of any type
	MessagesSent        uint64 // messages/sent
	BytesReceived       uint64 // bytes/received
	BytesSent           uint64 // bytes/sent
	PublishReceived     uint64 // publish/messages/received: PUBLISH packets from clients
	PublishSent         uint64 // publish/messages/sent: PUBLISH packets to clients
	PublishDropped      uint64 // publish/messages/dropped: every drop below
	Subscriptions       int    // subscriptions/count
	Retained            int    // retained messages/count
	Queued              int64  // store/messages/count: QoS 1/2 queued or in flight

	// The same PUBLISH packets by QoS (index 0, 1, 2; each sums to the
	// total above), and their payload bytes, as Mosquitto counts
	// publish/bytes (topic, properties and headers not included). A PUBLISH
	// sent has the QoS it is delivered at (the lower of the message's and
	// the subscription's).
	PublishReceivedQoS      [3]uint64 // publish/messages/qos<N>/received
	PublishSentQoS          [3]uint64 // publish/messages/qos<N>/sent
	PublishBytesReceived    uint64    // publish/bytes/received
	PublishBytesSent        uint64    // publish/bytes/sent
	PublishBytesReceivedQoS [3]uint64 // publish/bytes/qos<N>/received
	PublishBytesSentQoS     [3]uint64 // publish/bytes/qos<N>/sent

	// Why messages were dropped (each also counts in PublishDropped).
	DroppedSlowConsumer uint64 // QoS 0 not fitting a client's output buffer
	DroppedQueueFull    uint64 // QoS 1/2 beyond a session's queue bounds
	DroppedTooLarge     uint64 // larger than the client's Maximum Packet Size
	DroppedExpired      uint64 // Message Expiry Interval passed

	// SlowConsumerStalls counts waits for a slow subscriber (see
	// Config.SlowConsumerWait) that ended without room: the subscriber was
	// marked stalled and its QoS 0 messages are dropped without waiting
	// until it has drained its backlog.
	SlowConsumerStalls uint64

	ConnectionsRefused uint64
	ProtocolErrors     uint64
	StoreFailures      uint64 // commits that failed; their messages were refused
	WillsPublished     uint64
	SessionsExpired    uint64

	// Security and limits.
	AuthFailures           uint64 // logins refused: bad password, anonymous where not allowed
	ConnectionsOverLimit   uint64 // CONNECTs refused by max_connections (also in ConnectionsRefused)
	ConnectionsRateLimited uint64 // connections closed unread by max_connections_per_second_per_address
	SubscriptionsRefused   uint64 // filters refused by max_subscriptions_per_client
	RetainedRefused        uint64 // retained PUBLISHes refused by max_retained_messages/bytes
	PublishDenied          uint64 // PUBLISHes refused by the ACL (or to a $ topic)
	SubscribeDenied        uint64 // SUBSCRIBE filters refused by the ACL
}

// Stats returns the current counters. It is cheap: atomic loads and two
// index sizes.
func (s *Server) Stats() Stats {
	c := &s.stats
	st := Stats{
		ClientsConnected:    c.connected.Load(),
		ClientsDisconnected: c.disconnected.Load(),
		ClientsMaximum:      c.maxConnected.Load(),
		Connects:            c.connects.Load(),
		Disconnects:         c.disconnects.Load(),
		MessagesReceived:    c.msgsRecv.Load(),
		MessagesSent:        c.msgsSent.Load(),
		BytesReceived:       c.bytesRecv.Load(),
		BytesSent:           c.bytesSent.Load(),
		PublishDropped:      c.dropped.Load(),
		Subscriptions:       s.subs.Len(),
		Retained:            s.retained.Len(),
		Queued:              c.queued.Load(),
		DroppedSlowConsumer: c.slowDrops.Load(),
		DroppedQueueFull:    c.queueDrops.Load(),
		DroppedTooLarge:     c.tooLarge.Load(),
		DroppedExpired:      c.expired.Load(),
		SlowConsumerStalls:  c.slowStalls.Load(),
		ConnectionsRefused:  c.refused.Load(),
		ProtocolErrors:      c.protocolErrors.Load(),
		StoreFailures:       c.storeFailures.Load(),
		WillsPublished:      c.willsSent.Load(),
		SessionsExpired:     c.expiredSessions.Load(),

		AuthFailures:           c.authFailures.Load(),
		ConnectionsOverLimit:   c.overLimit.Load(),
		ConnectionsRateLimited: c.rateLimited.Load(),
		SubscriptionsRefused:   c.subsRefused.Load(),
		RetainedRefused:        c.retainedRefused.Load(),
		PublishDenied:          c.publishDenied.Load(),
		SubscribeDenied:        c.subscribeDenied.Load(),
	}
	for q := range 3 {
		st.PublishReceivedQoS[q] = c.pubRecv[q].Load()
		st.PublishSentQoS[q] = c.pubSent[q].Load()
		st.PublishBytesReceivedQoS[q] = c.pubBytesRecv[q].Load()
		st.PublishBytesSentQoS[q] = c.pubBytesSent[q].Load()
		st.PublishReceived += st.PublishReceivedQoS[q]
		st.PublishSent += st.PublishSentQoS[q]
		st.PublishBytesReceived += st.PublishBytesReceivedQoS[q]
		st.PublishBytesSent += st.PublishBytesSentQoS[q]
	}
	st.ClientsTotal = st.ClientsConnected + st.ClientsDisconnected
	if !s.startAt.IsZero() {
		st.Uptime = time.Since(s.startAt)
	}
	return st
}

// startSys publishes the $SYS topics once (so a subscriber sees them at
// once) and then every SysInterval.
func (s *Server) startSys() {
	if h, ok := s.store.(state.Health); ok {
		if bad, why := h.Damaged(); bad {
			s.log.Error("broker: the store was found damaged at start-up (the reason says what was kept and where the damaged files went)", "reason", why)
		}
	}
	if s.cfg.SysInterval <= 0 {
		return
	}
	version := s.opts.Version
	if version == "" {
		version = "gatewayd"
	}
	s.publishSys("$SYS/broker/version", version)
	s.publishStats()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		tk := time.NewTicker(s.cfg.SysInterval)
		defer tk.Stop()
		for {
			select {
			case <-tk.C:
				s.publishStats()
			case <-s.stop:
				return
			}
		}
	}()
}

// stopSys is a no-op: the $SYS goroutine ends when s.stop closes. It exists
// so that stopTimers reads as the complete list of what keeps time.
func (s *Server) stopSys() {}

func (s *Server) publishStats() {
	st := s.Stats()
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	s.publishSys("$SYS/broker/uptime", i(int64(st.Uptime/time.Second))+" seconds")
	s.publishSys("$SYS/broker/clients/connected", i(st.ClientsConnected))
	s.publishSys("$SYS/broker/clients/total", i(st.ClientsTotal))
	s.publishSys("$SYS/broker/clients/disconnected", i(st.ClientsDisconnected))
	s.publishSys("$SYS/broker/clients/maximum", i(st.ClientsMaximum))
	s.publishSys("$SYS/broker/messages/received", u(st.MessagesReceived))
	s.publishSys("$SYS/broker/messages/sent", u(st.MessagesSent))
	s.publishSys("$SYS/broker/bytes/received", u(st.BytesReceived))
	s.publishSys("$SYS/broker/bytes/sent", u(st.BytesSent))
	s.publishSys("$SYS/broker/publish/messages/received", u(st.PublishReceived))
	s.publishSys("$SYS/broker/publish/messages/sent", u(st.PublishSent))
	s.publishSys("$SYS/broker/publish/messages/dropped", u(st.PublishDropped))
	s.publishSys("$SYS/broker/publish/bytes/received", u(st.PublishBytesReceived))
	s.publishSys("$SYS/broker/publish/bytes/sent", u(st.PublishBytesSent))
	for q, name := range [3]string{"qos0", "qos1", "qos2"} {
		s.publishSys("$SYS/broker/publish/messages/"+name+"/received", u(st.PublishReceivedQoS[q]))
		s.publishSys("$SYS/broker/publish/messages/"+name+"/sent", u(st.PublishSentQoS[q]))
		s.publishSys("$SYS/broker/publish/bytes/"+name+"/received", u(st.PublishBytesReceivedQoS[q]))
		s.publishSys("$SYS/broker/publish/bytes/"+name+"/sent", u(st.PublishBytesSentQoS[q]))
	}
	s.publishSys("$SYS/broker/subscriptions/count", i(int64(st.Subscriptions)))
	s.publishSys("$SYS/broker/retained messages/count", i(int64(st.Retained)))
	s.publishSys("$SYS/broker/store/messages/count", i(st.Queued))
	if h, ok := s.store.(state.Health); ok {
		s.publishStoreHealth(h)
	}
}

// publishStoreHealth publishes what a durable store tells about itself:
// whether it was found damaged at start (and moved aside, or its newest log
// cut at the damage), and its wear
// figures. bytes/per message is bytes written over messages stored, what the
// SD card pays per message kept.
func (s *Server) publishStoreHealth(h state.Health) {
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	bad, why := h.Damaged()
	damaged := "0"
	if bad {
		damaged = "1"
	}
	s.publishSys("$SYS/broker/store/damaged", damaged)
	if why != "" {
		s.publishSys("$SYS/broker/store/damaged/reason", why)
	}
	st := h.Stats()
	s.publishSys("$SYS/broker/store/bytes/written", u(st.BytesWritten))
	s.publishSys("$SYS/broker/store/fsyncs", u(st.Fsyncs))
	s.publishSys("$SYS/broker/store/messages/stored", u(st.MessagesStored))
	s.publishSys("$SYS/broker/store/write/errors", u(st.WriteErrors))
	s.publishSys("$SYS/broker/store/quota/rejects", u(st.QuotaRejects))
	perMsg := 0.0
	if st.MessagesStored > 0 {
		perMsg = float64(st.BytesWritten) / float64(st.MessagesStored)
	}
	s.publishSys("$SYS/broker/store/bytes/per message", strconv.FormatFloat(perMsg, 'f', 1, 64))
}

// publishSys publishes a retained $SYS value. These are never stored: they
// are rebuilt at start and every interval.
func (s *Server) publishSys(topic, value string) {
	now := time.Now()
	m := &message{internal: true}
	m.ID = s.nextMsg.Add(1) - 1
	m.Topic, m.Payload, m.Retain, m.Created = topic, []byte(value), true, now
	m.build()
	s.publishMessage(m)
}
