package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"gatewayd/broker/packet"
)

// State is a client's connection state.
type State int

// Connection states.
const (
	StateDisconnected State = iota
	StateConnecting
	StateConnected
)

func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "disconnected"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	}
	return fmt.Sprintf("state %d", int(s))
}

// ServerInfo is what the server said in its last CONNACK, with the protocol's
// defaults for what it left out.
type ServerInfo struct {
	SessionPresent    bool
	AssignedClientID  string
	ReceiveMaximum    uint16 // how many QoS 1/2 PUBLISH the client may have in flight
	MaximumQoS        byte
	RetainAvailable   bool
	MaximumPacketSize uint32 // zero: no limit
	TopicAliasMaximum uint16
	KeepAlive         time.Duration // the keepalive in force
}

// Client is an MQTT client. Its methods are safe for concurrent use.
type Client struct {
	opts Options
	url  *url.URL

	cbMu sync.Mutex // orders OnConnectionChange calls

	mu          sync.Mutex
	state       State
	running     bool // between Connect and Disconnect (or a loss without AutoReconnect)
	conn        *conn
	cancelRun   context.CancelFunc
	runDone     chan struct{} // closed when the manager goroutine has exited
	server      ServerInfo
	assignedID  string
	connectedOK bool // a connection succeeded once: v5 reconnections resume the session

	nextID   uint16
	seq      uint64
	inflight map[uint16]*outMsg  // QoS 1/2 PUBLISH sent, not yet completed
	pending  []*outMsg           // QoS 1/2 PUBLISH waiting for a connection or the window
	requests map[uint16]*request // SUBSCRIBE / UNSUBSCRIBE waiting for their ack
	held     map[uint16]bool     // inbound QoS 2 ids between PUBLISH and PUBREL
	groups   []*subGroup         // subscriptions, for routing and resubscription

	deliveries chan delivery

	ackMu sync.Mutex
	acks  []*ackSlot // ManualAck: received messages not yet acknowledged, in arrival order
}

// ackSlot is the acknowledgement of one received QoS 1/2 message under
// ManualAck.
type ackSlot struct {
	c    *Client
	cn   *conn       // the connection the message came on
	kind packet.Type // PUBACK or PUBREC
	id   uint16
	done bool // acknowledged by the application (under c.ackMu)
}

// outMsg is one outbound QoS 1/2 message.
type outMsg struct {
	pkt      packet.Publish // aliases the caller's Message
	id       uint16         // zero while pending
	seq      uint64         // send order, for retransmission
	released bool           // QoS 2: PUBREC received, PUBREL sent
	canceled bool           // abandoned while pending
	done     func(error)
}

type request struct {
	kind     packet.Type
	group    *subGroup // SUBSCRIBE
	filters  []string  // UNSUBSCRIBE
	internal bool      // resubscription after a reconnect
	done     chan reqResult
}

type reqResult struct {
	reasons      []packet.ReasonCode
	reasonString string
	err          error
}

type subGroup struct {
	subs    []Subscription
	handler Handler
	// resend: the client subscribed again on its own (the server had lost
	// the session) and the SUBACK has not come. The server may have the
	// session now without the subscription, so the next connection sends
	// the SUBSCRIBE again even when the session is present.
	resend bool
}

type delivery struct {
	m   *Message    // nil: acknowledgement only
	ack packet.Type // PUBACK or PUBREC to send when the handler has returned; 0 for QoS 0
	id  uint16
	cn  *conn
}

// New checks opts and returns a client; it does not connect.
func New(opts Options) (*Client, error) {
	u, err := opts.validate()
	if err != nil {
		return nil, err
	}
	return &Client{
		opts:     opts,
		url:      u,
		inflight: make(map[uint16]*outMsg),
		requests: make(map[uint16]*request),
		held:     make(map[uint16]bool),
	}, nil
}

// State returns the current connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Server returns what the server announced in the last CONNACK.
func (c *Client) Server() ServerInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.server
}

func (c *Client) setState(s State, err error) {
	c.cbMu.Lock()
	defer c.cbMu.Unlock()
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
	if c.opts.OnConnectionChange != nil {
		c.opts.OnConnectionChange(s, err)
	}
}

// Connect opens the connection and sends CONNECT. It returns when the server
// has accepted it, or with the reason it did not. With AutoReconnect it keeps
// trying (with Backoff) until ctx ends, and once connected it reconnects in
// the background whenever the connection is lost, until Disconnect.
// Connect must not be called from a handler.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return ErrAlreadyConnected
	}
	prev := c.runDone
	c.mu.Unlock()
	if prev != nil {
		// A previous run may still be shutting down its goroutines.
		select {
		case <-prev:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return ErrAlreadyConnected
	}
	c.running = true
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancelRun = cancel
	done := make(chan struct{})
	c.runDone = done
	c.deliveries = make(chan delivery, 64)
	c.mu.Unlock()
	// Messages of an earlier run that were never acknowledged are the
	// server's to send again; they must not hold back this run's.
	c.ackMu.Lock()
	c.acks = nil
	c.ackMu.Unlock()

	first := make(chan error, 1)
	go c.manage(runCtx, ctx, first, done)
	return <-first
}

// manage owns one run: the first connection, then (with AutoReconnect) the
// reconnections, and the handler goroutine.
func (c *Client) manage(runCtx, firstCtx context.Context, first chan<- error, done chan struct{}) {
	defer close(done)
	stop := make(chan struct{})
	dispatched := make(chan struct{})
	go c.dispatch(c.deliveries, stop, dispatched)
	defer func() {
		close(stop)
		<-dispatched
	}()

	fctx, fcancel := context.WithCancel(firstCtx)
	unhook := context.AfterFunc(runCtx, fcancel)
	cn, err := c.connectLoop(fctx, true)
	unhook()
	fcancel()
	if err != nil {
		if runCtx.Err() != nil {
			err = ErrClosed
		}
		c.mu.Lock()
		c.running = false
		fails := c.dropSessionLocked(err)
		c.mu.Unlock()
		c.cancelRunCtx()
		run(fails)
		first <- err
		return
	}
	first <- nil

	for {
		select {
		case <-cn.done:
		case <-runCtx.Done():
			cn.close(ErrClosed)
		}
		cn.wg.Wait()
		err := cn.err
		c.mu.Lock()
		// Disconnect clears running before it sends DISCONNECT, which the
		// server may answer by closing before runCtx is cancelled.
		stopping := runCtx.Err() != nil || errors.Is(err, ErrClosed) || !c.running
		if c.conn == cn {
			c.conn = nil
		}
		var fails []func()
		for id, r := range c.requests {
			delete(c.requests, id)
			if !r.internal && r.group != nil {
				c.removeGroupLocked(r.group)
			}
			r.done <- reqResult{err: fmt.Errorf("%w: %w", ErrConnectionLost, err)}
		}
		if stopping || !c.opts.AutoReconnect {
			c.running = false
			if stopping {
				fails = c.dropSessionLocked(ErrClosed)
			} else {
				fails = c.dropSessionLocked(fmt.Errorf("%w: %w", ErrConnectionLost, err))
			}
		}
		c.mu.Unlock()
		run(fails)
		if stopping {
			err = nil // Disconnect: no failure to report
		} else {
			c.opts.Logger.Warn("mqtt connection lost", "url", c.opts.URL, "err", err)
		}
		c.setState(StateDisconnected, err)
		if stopping || !c.opts.AutoReconnect {
			c.cancelRunCtx()
			return
		}
		cn, err = c.connectLoop(runCtx, false)
		if err != nil {
			c.mu.Lock()
			c.running = false
			fails := c.dropSessionLocked(ErrClosed)
			c.mu.Unlock()
			run(fails)
			return
		}
	}
}

func (c *Client) cancelRunCtx() {
	c.mu.Lock()
	cancel := c.cancelRun
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func run(fs []func()) {
	for _, f := range fs {
		f()
	}
}

// connectLoop makes connection attempts until one succeeds, ctx ends, or
// (without AutoReconnect) one fails. A reconnection waits before its first
// attempt too, so that gateways cut off together spread out.
func (c *Client) connectLoop(ctx context.Context, first bool) (*conn, error) {
	attempt := 0
	wait := !first
	for {
		if wait {
			d := c.opts.Backoff.Delay(attempt)
			if c.opts.OnReconnectWait != nil {
				c.opts.OnReconnectWait(attempt, d)
			}
			attempt++
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		wait = true
		c.setState(StateConnecting, nil)
		cn, err := c.connectOnce(ctx)
		if err == nil {
			c.setState(StateConnected, nil)
			return cn, nil
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		}
		c.opts.Logger.Warn("mqtt connect failed", "url", c.opts.URL, "attempt", attempt, "err", err)
		c.setState(StateDisconnected, err)
		if !c.opts.AutoReconnect || ctx.Err() != nil {
			return nil, err
		}
	}
}

// connectOnce dials, exchanges CONNECT/CONNACK, installs the connection and
// resumes the session.
func (c *Client) connectOnce(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout)
	defer cancel()
	nc, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	// The handshake below does blocking I/O: let ctx interrupt it.
	unhook := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	cn, err := c.handshake(nc)
	if !unhook() {
		err = fmt.Errorf("mqtt client: connect %s: %w", c.target(), ctx.Err())
	}
	if err == nil {
		// If the connection is already gone, the reader finds out at once.
		nc.SetDeadline(time.Time{})
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.install(cn)
	return cn, nil
}

func (c *Client) target() string {
	if c.url != nil {
		return c.url.Redacted()
	}
	return "(dialer)"
}

func (c *Client) connectPacket() *packet.Connect {
	o := &c.opts
	p := &packet.Connect{
		ProtocolName: []byte("MQTT"),
		Version:      o.Protocol,
		CleanStart:   o.CleanStart,
		ClientID:     b(o.ClientID),
	}
	if o.KeepAlive > 0 {
		p.KeepAlive = uint16(o.KeepAlive / time.Second)
		if p.KeepAlive == 0 {
			p.KeepAlive = 1
		}
	}
	c.mu.Lock()
	if o.Protocol == packet.V5 {
		if c.connectedOK {
			p.CleanStart = false
		}
		if o.ClientID == "" && c.assignedID != "" {
			p.ClientID = []byte(c.assignedID)
		}
	}
	c.mu.Unlock()
	if o.Username != "" {
		p.UsernameFlag, p.Username = true, b(o.Username)
	}
	if o.Password != "" {
		p.PasswordFlag, p.Password = true, b(o.Password)
	}
	if w := o.Will; w != nil {
		p.WillFlag, p.WillQoS, p.WillRetain = true, w.QoS, w.Retain
		p.WillTopic, p.WillPayload = b(w.Topic), w.Payload
		if p.WillPayload == nil {
			p.WillPayload = []byte{}
		}
		if o.Protocol == packet.V5 {
			w.props(&p.WillProps)
			if w.Delay > 0 {
				p.WillProps.WillDelay = seconds(w.Delay)
				p.WillProps.Set(packet.PropWillDelay)
			}
		}
	}
	if o.Protocol == packet.V5 {
		pp, cp := &p.Props, &o.ConnectProperties
		if o.SessionExpiry > 0 {
			pp.SessionExpiry = seconds(o.SessionExpiry)
			pp.Set(packet.PropSessionExpiry)
		}
		if cp.ReceiveMaximum > 0 {
			pp.ReceiveMaximum = cp.ReceiveMaximum
			pp.Set(packet.PropReceiveMaximum)
		}
		if cp.TopicAliasMaximum > 0 {
			pp.TopicAliasMaximum = cp.TopicAliasMaximum
			pp.Set(packet.PropTopicAliasMaximum)
		}
		if cp.MaximumPacketSize > 0 {
			pp.MaximumPacketSize = cp.MaximumPacketSize
			pp.Set(packet.PropMaximumPacketSize)
		}
		pp.User = userProps(cp.UserProperties)
	}
	return p
}

// install makes cn the live connection and resumes the session on it.
func (c *Client) install(cn *conn) {
	c.mu.Lock()
	c.conn = cn
	c.connectedOK = true
	c.server = cn.info
	if cn.info.AssignedClientID != "" {
		c.assignedID = cn.info.AssignedClientID
	}
	var fails []func()
	sent := make([]*outMsg, 0, len(c.inflight))
	for _, m := range c.inflight {
		sent = append(sent, m)
	}
	slices.SortFunc(sent, func(a, b *outMsg) int { return cmp.Compare(a.seq, b.seq) })
	if cn.info.SessionPresent {
		// Resend in the original order: PUBLISH with DUP for those not yet
		// received, PUBREL for QoS 2 already received ([MQTT-4.4.0-1]).
		for _, m := range sent {
			if m.released {
				cn.sendAck(packet.PUBREL, m.id, packet.Success)
				continue
			}
			m.pkt.Dup = true
			if err := cn.send(&m.pkt, nil); err != nil && !errors.Is(err, ErrConnectionLost) {
				delete(c.inflight, m.id)
				fails = append(fails, completion(m, err))
			}
		}
		// Subscriptions made again with a connection that was lost before
		// their SUBACK: that connection may have made this session without
		// them. Subscribing again is harmless if it has them (retained
		// messages may come again).
		for _, g := range c.groups {
			if g.resend {
				c.subscribeLocked(cn, g, true)
			}
		}
	} else {
		// The server has no session: what it had received is gone with it.
		// QoS 2 messages it had received (PUBREC) were its to deliver; the
		// others are sent again as new messages, ahead of the queue.
		clear(c.held)
		var again []*outMsg
		for _, m := range sent {
			delete(c.inflight, m.id)
			if m.released {
				fails = append(fails, completion(m, nil))
				continue
			}
			m.id, m.pkt.PacketID, m.pkt.Dup = 0, 0, false
			again = append(again, m)
		}
		c.pending = append(again, c.pending...)
		for _, g := range c.groups {
			g.resend = true
			c.subscribeLocked(cn, g, true)
		}
	}
	fails = append(fails, c.pumpLocked()...)
	c.mu.Unlock()
	run(fails)
	c.opts.Logger.Info("mqtt connected", "url", c.opts.URL, "session_present", cn.info.SessionPresent)
	cn.start()
}

func completion(m *outMsg, err error) func() {
	return func() {
		if m.done != nil {
			m.done(err)
		}
	}
}

// dropSessionLocked fails every message waiting or in flight.
func (c *Client) dropSessionLocked(err error) []func() {
	var fails []func()
	for id, m := range c.inflight {
		delete(c.inflight, id)
		fails = append(fails, completion(m, err))
	}
	for _, m := range c.pending {
		if !m.canceled {
			fails = append(fails, completion(m, err))
		}
	}
	c.pending = nil
	return fails
}

// allocID returns a packet identifier in use by no PUBLISH, SUBSCRIBE or
// UNSUBSCRIBE in flight.
func (c *Client) allocIDLocked() (uint16, bool) {
	for range 65535 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if c.inflight[c.nextID] == nil && c.requests[c.nextID] == nil {
			return c.nextID, true
		}
	}
	return 0, false
}

// pumpLocked sends pending messages while the server's Receive Maximum
// allows. It returns the completions of messages that could not be sent.
func (c *Client) pumpLocked() []func() {
	cn := c.conn
	if cn == nil {
		return nil
	}
	var fails []func()
	for len(c.pending) > 0 {
		m := c.pending[0]
		if m.canceled {
			c.pending[0] = nil
			c.pending = c.pending[1:]
			continue
		}
		if len(c.inflight) >= min(int(cn.info.ReceiveMaximum), c.opts.MaxInflight) {
			break
		}
		id, ok := c.allocIDLocked()
		if !ok {
			break
		}
		c.pending[0] = nil
		c.pending = c.pending[1:]
		c.seq++
		m.id, m.seq, m.pkt.PacketID, m.pkt.Dup = id, c.seq, id, false
		if err := cn.send(&m.pkt, nil); err != nil && !errors.Is(err, ErrConnectionLost) {
			fails = append(fails, completion(m, err))
			continue
		}
		// Sent, or the connection is going: then it is resent on the next.
		c.inflight[id] = m
	}
	if len(c.pending) == 0 {
		c.pending = nil
	}
	return fails
}

// Publish sends m and waits: for QoS 0 until it is written to the
// connection, for QoS 1 until PUBACK, for QoS 2 until PUBCOMP. A v5 failure
// reason comes back as a *ReasonError. m must not be changed until Publish
// returns.
//
// QoS 1/2 messages wait their turn when the server's Receive Maximum window is
// full and, with AutoReconnect, while the client is reconnecting. If ctx ends
// first, Publish returns ctx.Err(); a message already sent stays in flight
// and is still delivered. QoS 0 messages are never queued: without a
// connection Publish returns ErrNotConnected.
func (c *Client) Publish(ctx context.Context, m *Message) error {
	ch := make(chan error, 1)
	m2, err := c.publish(m, func(err error) { ch <- err })
	if err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		if m2 != nil && m2.id == 0 {
			m2.canceled = true
		}
		c.mu.Unlock()
		return ctx.Err()
	}
}

// PublishAsync sends m and calls done once with the outcome, as Publish would
// return it. done is called from one of the client's goroutines and must not
// block; it may be called before PublishAsync returns. m must not be changed
// until done is called.
func (c *Client) PublishAsync(m *Message, done func(error)) {
	if done == nil {
		done = func(error) {}
	}
	if _, err := c.publish(m, done); err != nil {
		done(err)
	}
}

func (c *Client) publish(m *Message, done func(error)) (*outMsg, error) {
	if m.QoS > 2 {
		return nil, fmt.Errorf("mqtt client: publish %q: QoS %d", m.Topic, m.QoS)
	}
	if err := packet.ValidTopicName(b(m.Topic)); err != nil {
		return nil, fmt.Errorf("mqtt client: publish: %w", err)
	}
	c.mu.Lock()
	if !c.running || (c.conn == nil && (!c.opts.AutoReconnect || m.QoS == 0)) {
		c.mu.Unlock()
		return nil, ErrNotConnected
	}
	if c.opts.Protocol == packet.V5 && c.connectedOK {
		if m.QoS > c.server.MaximumQoS {
			c.mu.Unlock()
			return nil, &ReasonError{Op: "publish", Reason: packet.QoSNotSupported, Topic: m.Topic,
				ReasonString: fmt.Sprintf("the server's maximum QoS is %d", c.server.MaximumQoS)}
		}
		if m.Retain && !c.server.RetainAvailable {
			c.mu.Unlock()
			return nil, &ReasonError{Op: "publish", Reason: packet.RetainNotSupported, Topic: m.Topic}
		}
	}
	if m.QoS == 0 {
		cn := c.conn
		c.mu.Unlock()
		return nil, cn.sendMessage(m, done)
	}
	if c.opts.MaxPending > 0 && len(c.pending) >= c.opts.MaxPending {
		c.mu.Unlock()
		return nil, ErrQueueFull
	}
	om := &outMsg{pkt: m.toPublish(c.opts.Protocol), done: done}
	c.pending = append(c.pending, om)
	fails := c.pumpLocked()
	c.mu.Unlock()
	run(fails)
	return om, nil
}

// Subscribe subscribes to subs and routes matching messages to h. It returns
// the server's reason code (granted QoS or failure) for each subscription, and
// a *ReasonError for the first failure. Subscribing again to a filter moves it
// to the new handler. Subscriptions are renewed after a reconnection when the
// server did not keep the session. Subscribe needs a live connection
// (ErrNotConnected otherwise); it must not be called from a handler of the
// same client while messages are arriving faster than they are handled.
func (c *Client) Subscribe(ctx context.Context, h Handler, subs ...Subscription) ([]packet.ReasonCode, error) {
	if len(subs) == 0 {
		return nil, errors.New("mqtt client: subscribe: no subscription")
	}
	if h == nil {
		return nil, errors.New("mqtt client: subscribe: nil handler")
	}
	for _, s := range subs {
		if err := packet.ValidTopicFilter(b(s.Filter)); err != nil {
			return nil, fmt.Errorf("mqtt client: subscribe: %w", err)
		}
		if s.QoS > 2 || s.RetainHandling > 2 {
			return nil, fmt.Errorf("mqtt client: subscribe %q: QoS %d, retain handling %d", s.Filter, s.QoS, s.RetainHandling)
		}
	}
	g := &subGroup{subs: slices.Clone(subs), handler: h}
	c.mu.Lock()
	cn := c.conn
	if cn == nil {
		c.mu.Unlock()
		return nil, ErrNotConnected
	}
	for _, s := range subs {
		c.removeFilterLocked(s.Filter)
	}
	c.groups = append(c.groups, g)
	req, err := c.subscribeLocked(cn, g, false)
	if err != nil {
		c.removeGroupLocked(g)
	}
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case r := <-req.done:
		if r.err != nil {
			return nil, r.err
		}
		for i, rc := range r.reasons {
			if rc.IsError() {
				return r.reasons, &ReasonError{Op: "subscribe", Reason: rc, ReasonString: r.reasonString, Topic: subs[i].Filter}
			}
		}
		return r.reasons, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) subscribeLocked(cn *conn, g *subGroup, internal bool) (*request, error) {
	id, ok := c.allocIDLocked()
	if !ok {
		return nil, errors.New("mqtt client: subscribe: no free packet identifier")
	}
	p := &packet.Subscribe{PacketID: id, Subscriptions: make([]packet.Subscription, len(g.subs))}
	for i, s := range g.subs {
		p.Subscriptions[i] = packet.Subscription{
			Filter: b(s.Filter), QoS: s.QoS,
			NoLocal: s.NoLocal, RetainAsPublished: s.RetainAsPublished, RetainHandling: s.RetainHandling,
		}
	}
	req := &request{kind: packet.SUBSCRIBE, group: g, internal: internal, done: make(chan reqResult, 1)}
	if err := cn.send(p, nil); err != nil {
		return nil, err
	}
	c.requests[id] = req
	return req, nil
}

// Unsubscribe removes subscriptions. Their handlers stop receiving at once.
// A v5 failure reason comes back as a *ReasonError.
func (c *Client) Unsubscribe(ctx context.Context, filters ...string) error {
	if len(filters) == 0 {
		return errors.New("mqtt client: unsubscribe: no filter")
	}
	for _, f := range filters {
		if err := packet.ValidTopicFilter(b(f)); err != nil {
			return fmt.Errorf("mqtt client: unsubscribe: %w", err)
		}
	}
	c.mu.Lock()
	cn := c.conn
	if cn == nil {
		c.mu.Unlock()
		return ErrNotConnected
	}
	for _, f := range filters {
		c.removeFilterLocked(f)
	}
	id, ok := c.allocIDLocked()
	if !ok {
		c.mu.Unlock()
		return errors.New("mqtt client: unsubscribe: no free packet identifier")
	}
	p := &packet.Unsubscribe{PacketID: id, Filters: make([][]byte, len(filters))}
	for i, f := range filters {
		p.Filters[i] = b(f)
	}
	req := &request{kind: packet.UNSUBSCRIBE, filters: slices.Clone(filters), done: make(chan reqResult, 1)}
	err := cn.send(p, nil)
	if err == nil {
		c.requests[id] = req
	}
	c.mu.Unlock()
	if err != nil {
		return err
	}
	select {
	case r := <-req.done:
		if r.err != nil {
			return r.err
		}
		for i, rc := range r.reasons {
			if rc.IsError() {
				return &ReasonError{Op: "unsubscribe", Reason: rc, ReasonString: r.reasonString, Topic: filters[i]}
			}
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) removeFilterLocked(f string) {
	for _, g := range c.groups {
		g.subs = slices.DeleteFunc(g.subs, func(s Subscription) bool { return s.Filter == f })
	}
	c.groups = slices.DeleteFunc(c.groups, func(g *subGroup) bool { return len(g.subs) == 0 })
}

func (c *Client) removeGroupLocked(g *subGroup) {
	c.groups = slices.DeleteFunc(c.groups, func(x *subGroup) bool { return x == g })
}

// Disconnect sends DISCONNECT (normal disconnection: the server discards the
// will), closes the connection and stops reconnecting. Messages still waiting
// or in flight fail with ErrClosed; the session stays on the server if
// SessionExpiry (v5) or a clean session off (3.1.1) asked for it.
func (c *Client) Disconnect(ctx context.Context) error {
	return c.disconnect(ctx, packet.Success)
}

// DisconnectWithWill is Disconnect asking the server to publish the will
// (v5 reason 0x04). With MQTT 3.1.1, which has no such reason, it closes the
// connection without DISCONNECT, which has the same effect.
func (c *Client) DisconnectWithWill(ctx context.Context) error {
	return c.disconnect(ctx, packet.DisconnectWithWill)
}

func (c *Client) disconnect(ctx context.Context, reason packet.ReasonCode) error {
	c.mu.Lock()
	if !c.running {
		c.mu.Unlock()
		return ErrNotConnected
	}
	c.running = false
	cn, cancel, done := c.conn, c.cancelRun, c.runDone
	c.mu.Unlock()
	var err error
	if cn != nil && (reason == packet.Success || c.opts.Protocol == packet.V5) {
		ch := make(chan error, 1)
		if err = cn.send(&packet.Disconnect{Reason: reason}, func(err error) { ch <- err }); err == nil {
			select {
			case err = <-ch:
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		if errors.Is(err, ErrConnectionLost) {
			err = nil // gone anyway
		}
	}
	// Cancel first, so that the manager sees a stop and not a lost
	// connection to reconnect.
	cancel()
	if cn != nil {
		cn.close(ErrClosed)
	}
	select {
	case <-done:
	case <-ctx.Done():
		return cmp.Or(err, ctx.Err())
	}
	return err
}

// dispatch runs handlers, one message at a time, and sends each message's
// acknowledgement once its handler has returned (with ManualAck, once
// Message.Ack has been called).
func (c *Client) dispatch(in <-chan delivery, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var hs []Handler
	for {
		var d delivery
		select {
		case d = <-in:
		case <-stop:
			// The connection's reader has exited: finish what it handed over.
			for {
				select {
				case d = <-in:
					hs = c.deliver(d, hs)
				default:
					return
				}
			}
		}
		hs = c.deliver(d, hs)
	}
}

func (c *Client) deliver(d delivery, hs []Handler) []Handler {
	var slot *ackSlot
	if d.ack != 0 && c.opts.ManualAck {
		slot = &ackSlot{c: c, cn: d.cn, kind: d.ack, id: d.id}
		c.ackMu.Lock()
		c.acks = append(c.acks, slot)
		c.ackMu.Unlock()
		if d.m != nil {
			d.m.ack = slot
		}
	}
	handled := false
	if d.m != nil {
		hs = hs[:0]
		c.mu.Lock()
		for _, g := range c.groups {
			for _, s := range g.subs {
				if MatchTopic(s.Filter, d.m.Topic) {
					hs = append(hs, g.handler)
					break
				}
			}
		}
		c.mu.Unlock()
		if len(hs) == 0 && c.opts.DefaultHandler != nil {
			hs = append(hs, c.opts.DefaultHandler)
		}
		for _, h := range hs {
			h(d.m)
		}
		handled = len(hs) > 0
		clear(hs)
	}
	switch {
	case slot != nil:
		if !handled {
			// No handler to acknowledge it, or a QoS 2 PUBLISH sent again
			// before PUBREL (its PUBREC follows the original's).
			c.ack(slot)
		}
	case d.ack != 0:
		// If that connection is gone the server sends the message again.
		d.cn.sendAck(d.ack, d.id, packet.Success)
	}
	return hs
}

// ack marks s acknowledged and sends every acknowledgement at the head of
// the queue that is ready, in arrival order. One whose connection is gone is
// not sent: the server sends that message again.
func (c *Client) ack(s *ackSlot) {
	c.ackMu.Lock()
	defer c.ackMu.Unlock()
	if s.done {
		return
	}
	s.done = true
	n := 0
	for n < len(c.acks) && c.acks[n].done {
		a := c.acks[n]
		a.cn.sendAck(a.kind, a.id, packet.Success)
		c.acks[n] = nil
		n++
	}
	c.acks = c.acks[n:]
	if len(c.acks) == 0 {
		c.acks = nil
	}
}
