package bridge

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/broker/client"
	"gatewayd/broker/packet"
)

// The out direction keeps a window of local messages in flight. The local
// broker sends the bridge up to the window's size of queued messages without
// waiting for acknowledgements (the bridge's Receive Maximum); runOut sends
// them to the cloud in that order, several at a time; each is acknowledged
// locally, in order, once the cloud has it or it was refused for a counted
// reason. A message whose send failed for want of a link is sent again before
// any message after it.

// Entry states.
const (
	entryWaiting = iota // to be sent, or sent again
	entrySending        // handed to a cloud client, no outcome yet
	entryDone           // the cloud has it, or it was refused (counted)
)

// outEntry is one local message, from its receipt to its local
// acknowledgement.
type outEntry struct {
	local   *client.Message // as received: acknowledged when done
	msg     client.Message  // as sent to the cloud
	qos     byte            // the rule's; msg.QoS is it capped to the cloud's Maximum QoS
	state   int
	changed <-chan struct{} // while sending: closed at the next change of the cloud link
}

// outWindow holds the local messages in the bridge's hands, in the order
// the local broker sent them.
type outWindow struct {
	mu sync.Mutex
	q  []*outEntry
	// fresh is the index in q of the first message never sent; those
	// before it were sent at least once.
	fresh int
	// resend counts messages before fresh waiting to be sent again: while
	// there are any, they go first.
	resend int
	// sending counts messages handed to client cl (sendingQoS those at QoS
	// 1 or 2); all are on the same client.
	sending, sendingQoS int
	cl                  *client.Client
	// After a send failed for want of a link, nothing is sent until the
	// link changes (retryCh, the change channel of the failed send) or
	// until retryAt.
	retryCh <-chan struct{}
	retryAt time.Time

	wake chan struct{} // tells runOut that something changed
	size atomic.Int64  // len(q), for Stats
}

func (w *outWindow) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// onLocal takes one local message into the out window. It returns at once;
// the message is acknowledged locally (and so removed from the durable
// queue) only once the cloud has it or it was refused for a counted reason.
// When the bridge stops, the local connection is cut first, so that no
// acknowledgement of a message still in flight leaves.
func (b *Bridge) onLocal(m *client.Message) {
	e := &outEntry{local: m}
	if out, ok := b.toCloud(m); ok {
		e.msg, e.qos = out, out.QoS
	} else {
		e.state = entryDone
	}
	w := &b.out
	w.mu.Lock()
	w.q = append(w.q, e)
	w.ackDoneLocked()
	w.mu.Unlock()
	w.poke()
}

// toCloud maps a local message to what goes to the cloud; false when it
// matches no rule or is over the cloud's payload limit (both counted).
func (b *Bridge) toCloud(m *client.Message) (client.Message, bool) {
	var r *rule
	for _, x := range b.rules {
		if x.out() && client.MatchTopic(x.localFilter, m.Topic) {
			r = x
			break
		}
	}
	if r == nil {
		b.noRule.Add(1)
		return client.Message{}, false
	}
	out := client.Message{
		Topic: r.toRemote(m.Topic), Payload: m.Payload, QoS: r.qos, Retain: m.Retain,
		PayloadFormat: m.PayloadFormat, MessageExpiry: m.MessageExpiry, ContentType: m.ContentType,
		ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData, UserProperties: m.UserProperties,
	}
	if b.maxPayload > 0 && len(out.Payload) > b.maxPayload {
		b.tooLarge.Add(1)
		b.log.Warn("bridge: message over the cloud's payload limit, not sent", "topic", m.Topic, "bytes", len(out.Payload), "max", b.maxPayload)
		return client.Message{}, false
	}
	if out.Retain && b.cfg.Profile == ProfileAzure {
		out.Retain = false
		b.retainCleared.Add(1)
	}
	if b.azure != nil {
		out.Topic = azureEventsTopic(b.remoteID, out.Topic)
	}
	if b.echo != nil {
		for _, x := range b.rules {
			if x.in() && client.MatchTopic(x.remoteFilter, out.Topic) {
				b.echo.add(out.Topic, out.Payload)
				break
			}
		}
	}
	return out, true
}

// ackDoneLocked acknowledges locally, in order, the messages at the head of
// the window that are done.
func (w *outWindow) ackDoneLocked() {
	n := 0
	for n < len(w.q) && w.q[n].state == entryDone {
		n++
	}
	// Out of the bridge's hands before the local acknowledgements go, so
	// that whoever sees them gone from the local queue sees them out of
	// Stats.InflightOut too.
	w.size.Store(int64(len(w.q) - n))
	for i := range n {
		w.q[i].local.Ack()
		w.q[i] = nil
	}
	w.q = w.q[n:]
	w.fresh = max(0, w.fresh-n)
	if len(w.q) == 0 {
		w.q = nil
	}
}

// nextLocked returns the message to send next on cl, if one may go now, and
// whether it is sent again, with its QoS capped to the cloud's Maximum QoS.
// A message sent again goes before every later one, and only once nothing
// sent after it is still in flight; nothing goes while messages are in
// flight on a client being replaced, nor before the client's first CONNACK
// (which tells the Maximum QoS); and a QoS 0 message waits for the QoS 1/2
// messages before it to be acknowledged, so that the cloud receives them
// all in the local queue's order.
func (b *Bridge) nextLocked(cl *client.Client) (*outEntry, bool) {
	w := &b.out
	maxQoS := b.maxQoS.Load()
	if cl == nil || maxQoS < 0 || w.retryCh != nil || w.sending >= b.window || (w.sending > 0 && w.cl != cl) {
		return nil, false
	}
	var e *outEntry
	again := w.resend > 0
	if again {
		i := 0
		for i < w.fresh && w.q[i].state != entryWaiting {
			i++
		}
		if i == w.fresh {
			return nil, false
		}
		e = w.q[i]
		for _, x := range w.q[i+1 : w.fresh] {
			if x.state == entrySending {
				return nil, false
			}
		}
	} else {
		for w.fresh < len(w.q) && w.q[w.fresh].state == entryDone {
			w.fresh++
		}
		if w.fresh < len(w.q) {
			e = w.q[w.fresh]
		}
	}
	if e == nil {
		return nil, false
	}
	e.msg.QoS = min(e.qos, byte(maxQoS))
	if e.msg.QoS == 0 && w.sendingQoS > 0 {
		return nil, false
	}
	return e, again
}

// runOut sends the out window's messages to the cloud, in order, as the
// window, the link and drain_rate allow.
func (b *Bridge) runOut() {
	defer b.wg.Done()
	w := &b.out
	token := b.pace == nil // a drain_rate token is in hand
	for {
		cl, changed := b.current()
		w.mu.Lock()
		if w.retryCh != nil {
			select {
			case <-w.retryCh:
				w.retryCh = nil
			default:
				if !time.Now().Before(w.retryAt) {
					w.retryCh = nil
				}
			}
		}
		e, again := b.nextLocked(cl)
		retryCh, retryAt := w.retryCh, w.retryAt
		if e != nil && token {
			e.state, e.changed = entrySending, changed
			w.sending++
			if e.msg.QoS > 0 {
				w.sendingQoS++
			}
			w.cl = cl
			if again {
				w.resend--
			} else {
				w.fresh++
			}
		}
		w.mu.Unlock()
		switch {
		case e == nil:
			var timeout <-chan time.Time
			var t *time.Timer
			if retryCh != nil {
				t = time.NewTimer(time.Until(retryAt))
				timeout = t.C
			}
			select {
			case <-w.wake:
			case <-changed:
			case <-retryCh:
			case <-timeout:
			case <-b.ctx.Done():
			}
			if t != nil {
				t.Stop()
			}
			if b.ctx.Err() != nil {
				return
			}
		case !token:
			if b.pace.wait(b.ctx) != nil {
				return
			}
			token = true
		default:
			token = b.pace == nil
			if b.keepSendLog {
				b.sendLogMu.Lock()
				b.sendLog = append(b.sendLog, time.Now())
				b.sendLogMu.Unlock()
			}
			cl.PublishAsync(&e.msg, func(err error) { b.outDone(e, err) })
		}
	}
}

// outDone records the cloud's answer to one message.
func (b *Bridge) outDone(e *outEntry, err error) {
	w := &b.out
	var re *client.ReasonError
	w.mu.Lock()
	w.sending--
	if e.msg.QoS > 0 {
		w.sendingQoS--
	}
	switch {
	case err == nil:
		b.sent.Add(1)
		e.state = entryDone
	case errors.As(err, &re) && re.Reason == packet.PacketTooLarge:
		b.tooLarge.Add(1)
		b.log.Warn("bridge: message over the cloud's maximum packet size, not sent", "topic", e.msg.Topic, "bytes", len(e.msg.Payload))
		e.state = entryDone
	case errors.As(err, &re):
		b.remoteRefused.Add(1)
		b.log.Warn("bridge: cloud refused a message", "topic", e.msg.Topic, "err", err)
		e.state = entryDone
	case !linkError(err):
		// The client cannot send it as mapped (a topic name too long
		// with the remote prefix): it never will.
		b.invalid.Add(1)
		b.log.Warn("bridge: message cannot be sent to the cloud, not sent", "topic", shortTopic(e.msg.Topic), "err", err)
		e.state = entryDone
	default:
		// Not connected, or the client was replaced or lost the message
		// with its session: send it again once the link has changed. When
		// the bridge stops, it stays unacknowledged in the local queue.
		e.state = entryWaiting
		w.resend++
		if w.retryCh == nil {
			w.retryCh, w.retryAt = e.changed, time.Now().Add(time.Second)
		}
	}
	e.changed = nil
	w.ackDoneLocked()
	w.mu.Unlock()
	w.poke()
}

// onRemote hands one cloud message to the local broker and returns once it
// is on its way, or when the in window is full, once there is room. The
// message is acknowledged to the cloud once the local broker has stored it
// (or refused it: counted). When the bridge stops, what is not stored stays
// unacknowledged: the cloud sends it again.
func (b *Bridge) onRemote(m *client.Message) {
	if b.echo != nil && b.echo.take(m.Topic, m.Payload) {
		b.loops.Add(1)
		m.Ack()
		return
	}
	remote := m.Topic
	if b.azure != nil {
		remote = azureInboundTopic(b.remoteID, m.Topic)
	}
	var r *rule
	for _, x := range b.rules {
		if x.in() && client.MatchTopic(x.remoteFilter, remote) {
			r = x
			break
		}
	}
	if r == nil {
		b.noRule.Add(1)
		m.Ack()
		return
	}
	lm := &client.Message{
		Topic: r.toLocal(remote), Payload: m.Payload, QoS: min(m.QoS, r.QoS), Retain: m.Retain,
		PayloadFormat: m.PayloadFormat, MessageExpiry: m.MessageExpiry, ContentType: m.ContentType,
		ResponseTopic: m.ResponseTopic, CorrelationData: m.CorrelationData, UserProperties: m.UserProperties,
	}
	// The mapped topic may not be a topic name: too long with the local
	// prefix, or with azure-iot-hub a "topic" property holding a wildcard.
	if err := packet.ValidTopicName([]byte(lm.Topic)); err != nil {
		b.invalid.Add(1)
		b.log.Warn("bridge: cloud message maps to an invalid local topic, not delivered", "topic", shortTopic(lm.Topic), "err", err)
		m.Ack()
		return
	}
	select {
	case b.inSlots <- struct{}{}:
	case <-b.ctx.Done():
		return
	}
	b.storeLocal(m, lm)
}

// storeLocal publishes lm to the local broker and acknowledges m to the
// cloud once it is stored; it holds one place in the in window until then.
func (b *Bridge) storeLocal(m, lm *client.Message) {
	b.local.PublishAsync(lm, func(err error) {
		var re *client.ReasonError
		switch {
		case err == nil:
			b.received.Add(1)
		case b.ctx.Err() != nil:
			<-b.inSlots
			return
		case errors.As(err, &re):
			b.localRefused.Add(1)
			b.log.Warn("bridge: local broker refused a cloud message", "topic", lm.Topic, "err", err)
		case !linkError(err):
			b.invalid.Add(1)
			b.log.Warn("bridge: cloud message cannot be delivered locally", "topic", shortTopic(lm.Topic), "err", err)
		default:
			// The local connection is being replaced (a QoS 0 message has
			// no session to wait in): try again shortly.
			time.AfterFunc(100*time.Millisecond, func() {
				if b.ctx.Err() != nil {
					<-b.inSlots
					return
				}
				b.storeLocal(m, lm)
			})
			return
		}
		<-b.inSlots
		m.Ack()
	})
}

// linkError reports whether a publish failed for want of a link (none, lost,
// or the client disconnected or replaced) or of room in the client's queue:
// it may succeed later. Any other failure is the message's own and final.
func linkError(err error) bool {
	return errors.Is(err, client.ErrNotConnected) || errors.Is(err, client.ErrConnectionLost) ||
		errors.Is(err, client.ErrClosed) || errors.Is(err, client.ErrPingTimeout) || errors.Is(err, client.ErrQueueFull)
}

// shortTopic cuts a topic for the log.
func shortTopic(t string) string {
	if len(t) > 200 {
		return t[:200] + "..."
	}
	return t
}
