package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/broker"
	"gatewayd/broker/client"
	"gatewayd/broker/packet"
)

// Options are what a bridge needs besides its configuration.
type Options struct {
	// GatewayID names the gateway: default client id and status topic.
	GatewayID string
	// Broker is the embedded broker, started. Required.
	Broker *broker.Server
	// Logger: nil means slog.Default().
	Logger *slog.Logger
	// SysInterval is how often the counters are published under
	// $SYS/broker/bridge/<name>/. Zero: 10 s.
	SysInterval time.Duration
}

// Stats are a bridge's counters.
type Stats struct {
	State          string        // connected, connecting or disconnected (the cloud link)
	QueuedMessages int           // waiting for the cloud (including those in flight)
	QueuedBytes    int           // their size as counted against queue.max_bytes
	OldestQueued   time.Duration // age of the oldest; zero when none
	Sent           uint64        // local messages the cloud acknowledged (QoS 0: written)
	Received       uint64        // cloud messages stored by the local broker
	// InflightOut counts local messages in the bridge's hands: sent or
	// about to be sent to the cloud, not yet acknowledged locally. At most
	// the window (max_inflight).
	InflightOut int
	// InflightIn counts cloud messages handed to the local broker and not
	// yet stored by it. At most the window.
	InflightIn int
	// Dropped counts messages lost by policy: queue_full (drop-oldest made
	// room), expired (older than queue.max_age), no_rule (matching no rule,
	// from an earlier configuration's subscription).
	Dropped map[string]uint64
	// Rejected counts messages refused and acknowledged without being sent:
	// queue_full (reject-new), too_large (over the profile's payload limit),
	// remote_refused (the cloud's v5 negative acknowledgement),
	// local_refused (the local broker's), invalid (not sendable as mapped,
	// either way: the topic is not a valid topic name once prefixed).
	Rejected        map[string]uint64
	RetainCleared   uint64 // retain flags cleared for a cloud without retain
	LoopsSuppressed uint64 // copies of its own messages the cloud sent back
	Reconnects      uint64 // cloud connections after the first
}

// Bridge forwards between the embedded broker and one cloud broker.
type Bridge struct {
	cfg         Config
	opts        Options
	log         *slog.Logger
	srv         *broker.Server
	rules       []*rule
	localID     string
	remoteID    string
	statusTopic string
	azure       *ConnectionString
	maxPayload  int
	v5          bool // cloud protocol
	tlsCfg      *tls.Config
	url         string
	pace        *pacer
	echo        *echoes // nil unless needed (3.1.1 cloud with rules both ways)
	window      int     // messages in flight in each direction

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	local  *client.Client

	stopping atomic.Bool
	pipeMu   sync.Mutex
	pipe     net.Conn

	remMu    sync.Mutex
	remote   *client.Client
	remState client.State
	changed  chan struct{} // closed and replaced on every cloud state change
	connects uint64
	// maxQoS is the Maximum QoS of the cloud client's last CONNACK; -1
	// until the current client's first connection (it is set before the
	// state change is broadcast).
	maxQoS atomic.Int32

	out     outWindow
	inSlots chan struct{} // the in window: one token per cloud message being stored

	started     bool
	stopOnce    sync.Once
	sendLogMu   sync.Mutex
	sendLog     []time.Time // kept when keepSendLog is set (tests)
	keepSendLog bool
	renewEvery  time.Duration           // tests: replace the SAS token this often
	replace     chan struct{}           // tests: replace the cloud client now
	wrapLocal   func(net.Conn) net.Conn // tests: wraps the local connection

	sent, received, tooLarge, remoteRefused, localRefused, noRule atomic.Uint64
	invalid                                                       atomic.Uint64
	retainCleared, loops                                          atomic.Uint64
	subscribed                                                    atomic.Uint64 // cloud SUBACKs for the in rules
}

var errStopped = errors.New("bridge: stopped")

// New checks cfg and prepares a bridge; Start connects it.
func New(cfg Config, opts Options) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bridge %s: %w", cfg.Name, err)
	}
	if opts.Broker == nil {
		return nil, fmt.Errorf("bridge %s: no broker", cfg.Name)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SysInterval <= 0 {
		opts.SysInterval = 10 * time.Second
	}
	b := &Bridge{
		cfg:     cfg,
		opts:    opts,
		log:     opts.Logger.With("bridge", cfg.Name),
		srv:     opts.Broker,
		localID: localIDPrefix + cfg.Name,
		v5:      cfg.protocol() == packet.V5,
		url:     cfg.URL,
		pace:    newPacer(cfg.DrainRate),
		changed: make(chan struct{}),
		window:  cfg.window(),
	}
	b.maxQoS.Store(-1)
	b.out.wake = make(chan struct{}, 1)
	b.inSlots = make(chan struct{}, b.window)
	if cfg.Profile == "" {
		b.cfg.Profile = ProfileGeneric
	}
	b.remoteID = cfg.ClientID
	if b.remoteID == "" {
		b.remoteID = opts.GatewayID + "-" + cfg.Name
	}
	maxQoS := cfg.profileMaxQoS()
	both := false
	for i := range cfg.Topics {
		r := &rule{Rule: cfg.Topics[i]}
		if r.Pattern == "" {
			r.Pattern = "#"
		}
		r.qos = r.QoS
		if r.qos > maxQoS {
			b.log.Warn("bridge: rule QoS above what the cloud accepts, capped", "rule", i, "qos", r.QoS, "max", maxQoS, "profile", b.cfg.Profile)
			r.qos = maxQoS
		}
		r.localFilter = r.LocalPrefix + r.Pattern
		r.remoteFilter = r.RemotePrefix + r.Pattern
		both = both || r.Direction == DirBoth
		b.rules = append(b.rules, r)
	}
	switch b.cfg.Profile {
	case ProfileAWSIoT:
		b.maxPayload = 128 << 10
	case ProfileAzure:
		b.maxPayload = 256 << 10
		if cfg.ConnectionString != "" {
			cs, err := ParseConnectionString(cfg.ConnectionString)
			if err != nil {
				return nil, fmt.Errorf("bridge %s: %w", cfg.Name, err)
			}
			b.azure = cs
			b.remoteID = cs.DeviceID
			if b.url == "" {
				b.url = "mqtts://" + cs.HostName + ":8883"
			}
		}
	}
	if !b.v5 && both {
		b.echo = &echoes{}
	}
	if !b.v5 && b.window > DefaultMaxInflight311 {
		for _, r := range b.rules {
			if r.out() && r.qos == 2 {
				b.log.Warn("bridge: MQTT 3.1.1 has no flow control: a cloud that takes fewer QoS 2 messages in flight than max_inflight may drop the rest (Mosquitto's default is 20)", "max_inflight", b.window)
				break
			}
		}
	}
	switch {
	case cfg.StatusTopic == "-" || b.cfg.Profile == ProfileAzure:
	case cfg.StatusTopic != "":
		b.statusTopic = cfg.StatusTopic
	default:
		prefix := ""
		for _, r := range b.rules {
			if r.out() {
				prefix = r.RemotePrefix
				break
			}
		}
		b.statusTopic = prefix + opts.GatewayID + "/status"
	}
	u, err := url.Parse(b.url)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: url: %w", cfg.Name, err)
	}
	switch u.Scheme {
	case "mqtts", "ssl", "tls", "wss":
		t := cfg.TLS
		tc, err := client.NewTLSConfig(client.TLSFiles{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName, NextProtos: t.ALPN})
		if err != nil {
			return nil, fmt.Errorf("bridge %s: %w", cfg.Name, err)
		}
		if len(tc.NextProtos) == 0 && b.cfg.Profile == ProfileAWSIoT && u.Port() == "443" {
			tc.NextProtos = []string{"x-amzn-mqtt-ca"}
		}
		tc.InsecureSkipVerify = t.InsecureSkipVerify
		b.tlsCfg = tc
	}
	// The cloud client is made at each connection; what it would refuse
	// is refused here, not only logged once the bridge runs.
	o, _ := b.remoteOptions()
	if _, err := client.New(o); err != nil {
		return nil, fmt.Errorf("bridge %s: cloud client: %w", cfg.Name, err)
	}
	return b, nil
}

// Name is the bridge's name.
func (b *Bridge) Name() string { return b.cfg.Name }

// localIDPrefix starts the client id of a bridge's local session.
const localIDPrefix = "gatewayd-bridge-"

// Removed is a bridge whose local session EndRemoved ended, and how many
// queued messages went with it.
type Removed struct {
	Name     string
	Messages int
}

// EndRemoved ends the local sessions of bridges that are not among names (the
// configured ones), with the queues they hold, and returns those it ended. A
// bridge's session is exempt from broker.max_session_expiry, so this is what
// removes one whose bridge was taken out of the configuration. Running
// bridges' sessions are connected and left alone.
func EndRemoved(srv *broker.Server, names []string) []Removed {
	var ended []Removed
	for _, id := range srv.SessionIDs(localIDPrefix) {
		name := strings.TrimPrefix(id, localIDPrefix)
		if slices.Contains(names, name) {
			continue
		}
		q, _ := srv.ClientQueue(id)
		if srv.EndSession(id) {
			ended = append(ended, Removed{Name: name, Messages: q.Messages})
		}
	}
	return ended
}

// RemoteClientID is the client id used at the cloud.
func (b *Bridge) RemoteClientID() string { return b.remoteID }

// policy is the broker queue policy for the bridge's local session.
func (b *Bridge) policy() broker.ClientPolicy {
	q := b.cfg.Queue
	p := broker.ClientPolicy{
		MaxQueuedMessages: q.MaxMessages,
		MaxQueuedBytes:    q.MaxBytes,
		MaxAge:            q.MaxAge,
		DropOldest:        q.Policy != PolicyRejectNew,
		UpgradeQoS:        true,
		// The session holds the queue: it must outlive any stop, whatever
		// broker.max_session_expiry says.
		KeepSession: true,
	}
	if p.MaxQueuedMessages == 0 {
		p.MaxQueuedMessages = DefaultMaxMessages
	}
	if p.MaxQueuedBytes == 0 {
		p.MaxQueuedBytes = DefaultMaxBytes
	}
	return p
}

// Start connects the bridge to the local broker at once (queuing starts
// then) and to the cloud in the background, retrying with backoff. It
// returns when the local side is ready.
func (b *Bridge) Start(ctx context.Context) error {
	if b.started {
		return errors.New("bridge: already started")
	}
	b.started = true
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.srv.SetClientPolicy(b.localID, b.policy())
	// The local session may hold QoS 2 ids of cloud messages a previous
	// bridge (before a restart, a reload or a power cut) handed over without
	// finishing the exchange; the new client starts its packet ids afresh,
	// and the broker would take a new message with such an id for a
	// duplicate and drop it. Those messages were routed already.
	if n := b.srv.ReleaseInbound(b.localID); n > 0 {
		b.log.Info("bridge: released QoS 2 packet ids left in the local session by the previous run", "ids", n)
	}
	b.publishState("connecting")

	lc, err := client.New(client.Options{
		Dialer:            b.dialLocal,
		ClientID:          b.localID,
		Protocol:          packet.V5,
		SessionExpiry:     time.Duration(math.MaxUint32) * time.Second,
		KeepAlive:         -1,
		ConnectProperties: client.ConnectProperties{ReceiveMaximum: uint16(b.window)},
		ManualAck:         true,
		AutoReconnect:     true,
		Backoff:           client.Backoff{Base: 50 * time.Millisecond, Cap: time.Second},
		DefaultHandler:    b.onLocal,
		Logger:            b.log,
	})
	if err != nil {
		return err
	}
	b.local = lc
	if err := lc.Connect(ctx); err != nil {
		b.cancel()
		return fmt.Errorf("bridge %s: local broker: %w", b.cfg.Name, err)
	}
	var subs []client.Subscription
	seen := map[string]bool{}
	for _, r := range b.rules {
		if r.out() && !seen[r.localFilter] {
			seen[r.localFilter] = true
			// Retain handling 1: retained messages go up when the
			// subscription is new, not again at every start.
			subs = append(subs, client.Subscription{Filter: r.localFilter, QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 1})
		}
	}
	if len(subs) > 0 {
		if _, err := lc.Subscribe(ctx, b.onLocal, subs...); err != nil {
			b.Stop(context.Background())
			return fmt.Errorf("bridge %s: local subscribe: %w", b.cfg.Name, err)
		}
	}
	// Rules removed since the last start would otherwise keep queuing.
	var stale []string
	for _, f := range b.srv.ClientSubscriptions(b.localID) {
		if !seen[f] {
			stale = append(stale, f)
		}
	}
	if len(stale) > 0 {
		if err := lc.Unsubscribe(ctx, stale...); err != nil {
			b.log.Warn("bridge: dropping subscriptions of removed rules", "filters", stale, "err", err)
		}
	}
	b.wg.Add(3)
	go b.runRemote()
	go b.runOut()
	go b.runSys()
	return nil
}

func (b *Bridge) dialLocal(context.Context) (net.Conn, error) {
	b.pipeMu.Lock()
	defer b.pipeMu.Unlock()
	if b.stopping.Load() {
		return nil, errStopped
	}
	a, s := net.Pipe()
	b.pipe = a
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer s.Close()
		b.srv.ServeConn(s, "bridge")
	}()
	if b.wrapLocal != nil {
		return b.wrapLocal(a), nil
	}
	return a, nil
}

// remoteOptions builds the cloud client's options; with Azure a fresh SAS
// token each time.
func (b *Bridge) remoteOptions() (client.Options, time.Duration) {
	c := &b.cfg
	o := client.Options{
		URL:           b.url,
		ClientID:      b.remoteID,
		Username:      c.Username,
		Password:      c.Password,
		Protocol:      c.protocol(),
		CleanStart:    c.CleanStart,
		KeepAlive:     c.KeepAlive,
		TLS:           b.tlsCfg,
		AutoReconnect: true,
		Backoff:       client.Backoff{Base: c.Backoff.Base, Cap: c.Backoff.Cap},
		// The window and the status message.
		MaxInflight:        b.window + 1,
		ConnectProperties:  client.ConnectProperties{ReceiveMaximum: uint16(b.window)},
		ManualAck:          true,
		OnConnectionChange: b.onRemoteState,
		DefaultHandler:     b.onRemote,
		Logger:             b.log,
	}
	if b.v5 && !c.CleanStart {
		o.SessionExpiry = 7 * 24 * time.Hour
	}
	if b.statusTopic != "" {
		o.Will = &client.Will{Message: client.Message{Topic: b.statusTopic, Payload: []byte("offline"), QoS: 1, Retain: true}}
	}
	var renew time.Duration
	if b.azure != nil {
		ttl := c.SASTTL
		if ttl == 0 {
			ttl = time.Hour
		}
		o.Username = b.azure.Username()
		o.Password = b.azure.SASToken(time.Now().Add(ttl))
		renew = ttl * 8 / 10
		if b.renewEvery > 0 {
			renew = b.renewEvery
		}
	}
	return o, renew
}

// runRemote owns the cloud client: connect (retrying), subscribe, and with
// Azure replace the connection before its SAS token expires.
func (b *Bridge) runRemote() {
	defer b.wg.Done()
	for b.ctx.Err() == nil {
		o, renew := b.remoteOptions()
		cl, err := client.New(o)
		if err != nil {
			b.log.Error("bridge: cloud client", "err", err)
			return
		}
		b.remMu.Lock()
		b.remote = cl
		b.maxQoS.Store(-1)
		b.broadcastLocked()
		b.remMu.Unlock()
		if err := cl.Connect(b.ctx); err != nil {
			continue // b.ctx ended
		}
		b.subscribeRemote(cl)
		var renewC <-chan time.Time
		var renewT *time.Timer
		if renew > 0 {
			renewT = time.NewTimer(renew)
			renewC = renewT.C
		}
		select {
		case <-b.ctx.Done():
			if b.statusTopic != "" && cl.State() == client.StateConnected {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				cl.Publish(ctx, &client.Message{Topic: b.statusTopic, Payload: []byte("offline"), QoS: 1, Retain: true})
				cancel()
			}
		case <-renewC:
			b.log.Info("bridge: reconnecting with a fresh SAS token")
		case <-b.replace:
		}
		if renewT != nil {
			renewT.Stop()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cl.Disconnect(ctx)
		cancel()
	}
}

// subscribeRemote subscribes to the in rules; a persistent cloud session
// keeps them, but the rules may have changed since. A subscription whose
// answer was lost with the link is requested again on the next connection:
// the cloud may have resumed the session without it (the link failed between
// CONNACK and SUBSCRIBE), and then it would send nothing. It returns once the
// cloud has answered, or when the bridge stops.
func (b *Bridge) subscribeRemote(cl *client.Client) {
	var subs []client.Subscription
	seen := map[string]bool{}
	for _, r := range b.rules {
		if !r.in() {
			continue
		}
		f := r.remoteFilter
		if b.cfg.Profile == ProfileAzure {
			f = azureDeviceboundFilter(b.remoteID)
		}
		if seen[f] {
			continue
		}
		seen[f] = true
		subs = append(subs, client.Subscription{Filter: f, QoS: r.qos, NoLocal: b.v5, RetainAsPublished: b.v5})
	}
	if len(subs) == 0 {
		return
	}
	for {
		_, changed := b.current()
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		_, err := cl.Subscribe(ctx, b.onRemote, subs...)
		cancel()
		lost := errors.Is(err, client.ErrConnectionLost) || errors.Is(err, client.ErrNotConnected)
		switch {
		case err == nil:
			b.subscribed.Add(1)
			return
		case b.ctx.Err() != nil:
			return
		case !lost && !errors.Is(err, context.DeadlineExceeded):
			// A refusal is a configuration problem.
			b.log.Warn("bridge: cloud subscribe", "err", err)
			return
		}
		b.log.Info("bridge: cloud subscribe unanswered, subscribing again once connected", "err", err)
		if lost {
			// The client reports the loss as a state change.
			select {
			case <-changed:
			case <-b.ctx.Done():
				return
			}
		}
		if !b.waitConnected(cl) {
			return
		}
	}
}

// waitConnected waits until cl is connected; false when the bridge stops.
func (b *Bridge) waitConnected(cl *client.Client) bool {
	for {
		_, changed := b.current()
		if cl.State() == client.StateConnected {
			return true
		}
		select {
		case <-changed:
		case <-b.ctx.Done():
			return false
		}
	}
}

func (b *Bridge) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Bridge) onRemoteState(s client.State, err error) {
	if s == client.StateConnected {
		b.remMu.Lock()
		cl := b.remote
		b.remMu.Unlock()
		mq := cl.Server().MaximumQoS
		if mq < b.maxOutQoS() && mq != byte(b.maxQoS.Load()) {
			b.log.Warn("bridge: the cloud's maximum QoS is below a rule's QoS: messages are sent at the cloud's maximum", "max_qos", mq)
		}
		b.maxQoS.Store(int32(mq))
	}
	b.remMu.Lock()
	b.remState = s
	if s == client.StateConnected {
		b.connects++
	}
	b.broadcastLocked()
	b.remMu.Unlock()
	b.publishState(s.String())
	if s == client.StateConnected && b.statusTopic != "" {
		b.remMu.Lock()
		cl := b.remote
		b.remMu.Unlock()
		cl.PublishAsync(&client.Message{Topic: b.statusTopic, Payload: []byte("online"), QoS: 1, Retain: true}, nil)
	}
	if err != nil {
		b.log.Info("bridge: cloud link", "state", s, "err", err)
	}
}

// maxOutQoS is the highest QoS of the out rules.
func (b *Bridge) maxOutQoS() byte {
	var q byte
	for _, r := range b.rules {
		if r.out() {
			q = max(q, r.qos)
		}
	}
	return q
}

// current returns the cloud client and the channel closed at its next change.
func (b *Bridge) current() (*client.Client, <-chan struct{}) {
	b.remMu.Lock()
	defer b.remMu.Unlock()
	return b.remote, b.changed
}

// Stop stops the bridge: the local connection is cut first (what is not yet
// in the cloud stays queued), the cloud is told "offline", and both clients
// are disconnected. The local broker keeps the queue.
func (b *Bridge) Stop(ctx context.Context) error {
	if !b.started {
		return nil
	}
	b.stopOnce.Do(func() {
		b.stopping.Store(true)
		b.pipeMu.Lock()
		if b.pipe != nil {
			b.pipe.Close()
		}
		b.pipeMu.Unlock()
		b.cancel()
		done := make(chan struct{})
		go func() {
			b.local.Disconnect(ctx)
			b.wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-ctx.Done():
		}
		b.publishState("disconnected")
		b.publishStats()
	})
	return ctx.Err()
}

// Stats returns the bridge's counters.
func (b *Bridge) Stats() Stats {
	q, _ := b.srv.ClientQueue(b.localID)
	b.remMu.Lock()
	st := Stats{State: b.remState.String()}
	if b.connects > 0 {
		st.Reconnects = b.connects - 1
	}
	b.remMu.Unlock()
	st.QueuedMessages, st.QueuedBytes = q.Messages, q.Bytes
	if !q.Oldest.IsZero() {
		st.OldestQueued = time.Since(q.Oldest)
	}
	st.Sent, st.Received = b.sent.Load(), b.received.Load()
	st.InflightOut, st.InflightIn = int(b.out.size.Load()), len(b.inSlots)
	st.Dropped = map[string]uint64{"queue_full": q.DroppedOldest, "expired": q.Expired, "no_rule": b.noRule.Load()}
	st.Rejected = map[string]uint64{"queue_full": q.RejectedFull, "too_large": b.tooLarge.Load(),
		"remote_refused": b.remoteRefused.Load(), "local_refused": b.localRefused.Load(), "invalid": b.invalid.Load()}
	st.RetainCleared, st.LoopsSuppressed = b.retainCleared.Load(), b.loops.Load()
	return st
}

func (b *Bridge) sysTopic(leaf string) string {
	return "$SYS/broker/bridge/" + b.cfg.Name + "/" + leaf
}

func (b *Bridge) publishState(s string) {
	b.srv.PublishSys(b.sysTopic("state"), s)
}

func (b *Bridge) publishStats() {
	st := b.Stats()
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	b.srv.PublishSys(b.sysTopic("queued/messages"), strconv.Itoa(st.QueuedMessages))
	b.srv.PublishSys(b.sysTopic("queued/bytes"), strconv.Itoa(st.QueuedBytes))
	b.srv.PublishSys(b.sysTopic("queued/oldest_age_seconds"), strconv.FormatInt(int64(st.OldestQueued/time.Second), 10))
	b.srv.PublishSys(b.sysTopic("sent"), u(st.Sent))
	b.srv.PublishSys(b.sysTopic("received"), u(st.Received))
	b.srv.PublishSys(b.sysTopic("inflight/out"), strconv.Itoa(st.InflightOut))
	b.srv.PublishSys(b.sysTopic("inflight/in"), strconv.Itoa(st.InflightIn))
	for k, v := range st.Dropped {
		b.srv.PublishSys(b.sysTopic("dropped/"+k), u(v))
	}
	for k, v := range st.Rejected {
		b.srv.PublishSys(b.sysTopic("rejected/"+k), u(v))
	}
	b.srv.PublishSys(b.sysTopic("retain_cleared"), u(st.RetainCleared))
	b.srv.PublishSys(b.sysTopic("loops_suppressed"), u(st.LoopsSuppressed))
	b.srv.PublishSys(b.sysTopic("reconnects"), u(st.Reconnects))
}

func (b *Bridge) runSys() {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.SysInterval)
	defer t.Stop()
	b.publishStats()
	for {
		select {
		case <-t.C:
			b.publishStats()
		case <-b.ctx.Done():
			return
		}
	}
}
