package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"gatewayd/broker/auth"
	"gatewayd/broker/packet"
	"gatewayd/broker/state"
	"gatewayd/broker/topics"
)

// Options are the broker's collaborators. Every field may be left zero.
type Options struct {
	Store state.Store // nil: state.Memory{}
	// Auth, when set, decides every CONNECT in place of the built-in
	// checks (password_file, allow_anonymous, certificate identities).
	Auth Authenticator
	// ACL, when set, is used in place of acl_file; with neither, every
	// client may publish and subscribe to everything.
	ACL     Authorizer
	Logger  *slog.Logger // nil: slog.Default()
	Version string       // reported in $SYS/broker/version
}

// Server is an MQTT broker. Create it with New, then Start it; Shutdown stops
// it. A Server cannot be restarted.
type Server struct {
	cfg   Config
	opts  Options
	log   *slog.Logger
	store state.Store
	// durable is Store.Durable(), read once: with a store that keeps nothing
	// the broker builds no batches at all, keeping the cost off the hot path.
	durable bool

	subs     *topics.Index[*session, state.Subscription]
	retained *topics.Retained[*message]

	// lns are the listeners, built by New, bound by Start and changed by
	// Reload. It is replaced (never changed in place) with both reloadMu and
	// mu held, so holding either one is enough to read it.
	lns []*listener

	// Security: the built-in authentication and authorisation, swapped by
	// Reload. authz is opts.ACL, the acl_file adapter, or nil (allow all).
	passwords atomic.Pointer[auth.PasswordFile]
	acl       atomic.Pointer[auth.ACL]
	authz     Authorizer
	throttle  *auth.Throttle
	open      atomic.Int64 // open network connections
	// reloadMu serialises Start, Reload and ReloadCertificates.
	reloadMu sync.Mutex

	// retainMu guards the two totals of the retained messages clients
	// set, checked against max_retained_messages and max_retained_bytes.
	retainMu      sync.Mutex
	retainedCount int
	retainedBytes int

	// mu guards sessions, conns and the lifecycle flags. Lock
	// order: mu, then a session's mu, then a connection's outMu.
	mu       sync.Mutex
	sessions map[string]*session
	conns    map[*conn]struct{}
	bound    bool // listeners bound
	started  bool
	closing  bool
	sessSeq  uint64

	// storeMu serialises the state changes of a durable store with their
	// Commit calls, so batches reach the store in the order the changes were
	// made. It is taken only when durable.
	storeMu sync.Mutex

	wg      sync.WaitGroup // every goroutine the server starts
	stop    chan struct{}  // closed by Shutdown
	ctx     context.Context
	cancel  context.CancelFunc // cancels ctx (Authenticator calls) on Shutdown
	nextMsg atomic.Uint64      // next message id
	rr      atomic.Uint64      // shared subscription round robin
	startAt time.Time
	stats   counters

	routes sync.Pool // *route scratch for routing a PUBLISH

	// loop serves plain TCP connections (EventLoop); nil: a goroutine each.
	loop *eventLoop
}

// New validates cfg and returns a Server that is not yet listening.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	if cfg.MaxOutputBytes == 0 {
		cfg.MaxOutputBytes = 256 << 10
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if opts.Store == nil {
		opts.Store = state.Memory{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	lns, err := newListeners(&cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		lns:      lns,
		throttle: auth.NewThrottle(cfg.AuthThrottle),
		cfg:      cfg,
		opts:     opts,
		log:      opts.Logger,
		store:    opts.Store,
		durable:  opts.Store.Durable(),
		subs:     topics.NewIndex[*session, state.Subscription](),
		retained: topics.NewRetained[*message](),
		sessions: make(map[string]*session),
		conns:    make(map[*conn]struct{}),
		stop:     make(chan struct{}),
	}
	if cfg.PasswordFile != "" {
		pw, err := auth.LoadPasswordFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("broker: password_file: %w", err)
		}
		s.passwords.Store(pw)
	}
	s.authz = opts.ACL
	if cfg.ACLFile != "" {
		acl, err := auth.LoadACLFile(cfg.ACLFile)
		if err != nil {
			return nil, fmt.Errorf("broker: acl_file: %w", err)
		}
		s.acl.Store(acl)
		if opts.ACL == nil {
			s.authz = aclFile{s}
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.nextMsg.Store(1)
	s.routes.New = func() any { return newRoute(s) }
	return s, nil
}

// Start loads the store's snapshot, binds every listener and starts serving.
// A port that cannot be bound gives an error naming the address and the
// configuration key to change.
func (s *Server) Start() error {
	s.mu.Lock()
	if s.started || s.closing {
		s.mu.Unlock()
		return errors.New("broker: Start called twice or after Shutdown")
	}
	s.started = true
	s.startAt = time.Now()
	s.mu.Unlock()
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()

	var bound []*listener
	closeAll := func() {
		for _, l := range bound {
			l.ln.Close()
		}
	}
	for _, l := range s.lns {
		if err := l.bind(s.cfg.MaxConnectionsPerSecondPerAddress); err != nil {
			closeAll()
			return fmt.Errorf("broker: cannot listen on %s (change %s): %w", l.cfg.Address, l.settings().key+addrSuffix(l), err)
		}
		bound = append(bound, l)
	}
	// The store is loaded once the ports are ours, so a busy port leaves
	// nothing (timers of restored sessions) behind.
	snap, err := s.store.Load()
	if err == nil {
		err = s.restore(snap)
	}
	if err != nil {
		closeAll()
		s.stopTimers()
		return fmt.Errorf("broker: loading stored state: %w", err)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		closeAll()
		return errors.New("broker: shut down while starting")
	}
	if s.cfg.EventLoop {
		l, err := newEventLoop(s)
		if err != nil {
			s.log.Warn("broker: no event loop, a goroutine per connection instead", "err", err)
		} else {
			s.loop = l
		}
	}
	s.bound = true
	for _, l := range s.lns {
		if l.isWS() {
			l.http = s.newHTTP(l)
		}
		s.wg.Add(1)
		go s.serveListener(l, l.ln)
	}
	s.mu.Unlock()
	s.startSys()
	for _, l := range s.lns {
		s.logExposure(l)
	}
	s.log.Info("broker started", "addrs", s.Addrs())
	return nil
}

// addrSuffix is the key of a listener's address below its own key.
func addrSuffix(l *listener) string {
	if l.settings().key == "broker.listeners" {
		return ""
	}
	return ".address"
}

// Addrs returns the addresses the listeners are bound to (useful with port
// 0), in configuration order, as of the last Reload.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.bound {
		return nil
	}
	addrs := make([]net.Addr, len(s.lns))
	for i, l := range s.lns {
		addrs[i] = l.ln.Addr()
	}
	return addrs
}

func (s *Server) accept(ln net.Listener, l *listener) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off rather than
			// spin, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("broker: accept failed", "listener", l.name, "err", err)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.stop:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		if tc, ok := nc.(*net.TCPConn); ok && s.loop != nil {
			lc, err := newLoopConn(tc)
			if err != nil {
				s.log.Warn("broker: connection not served", "listener", l.name, "remote", tc.RemoteAddr().String(), "err", err)
				tc.Close()
				continue
			}
			if c := s.newConn(lc, l); c != nil {
				c.kaSet = time.Since(epoch) // the connect timeout's origin
				s.loop.attach(c)
			} else {
				lc.release()
			}
			continue
		}
		if c := s.newConn(nc, l); c != nil {
			go c.serveAccepted()
		}
	}
}

// ServeConn serves an already-accepted connection, for example one end of a
// net.Pipe, as if it had arrived on the named listener: that listener's
// anonymous policy, certificate identities and connection limits apply. A
// name no listener has stands for in-process clients (drivers, the bridge):
// they may connect anonymously and no connection limit applies to them,
// but password_file (for a client sending a user name) and the ACL apply as
// to anyone. A connection served under the name of a listener that a
// Reload then closes is disconnected with that listener's clients. It
// returns when the connection ends.
func (s *Server) ServeConn(nc net.Conn, name string) {
	l := s.listenerNamed(name)
	if l == nil {
		l = &listener{name: name}
		l.set.Store(&listenerSettings{anonymous: true})
	}
	c := s.newConn(nc, l)
	if c == nil {
		return
	}
	c.serve()
}

func (s *Server) listenerNamed(name string) *listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.bound {
		return nil
	}
	for _, l := range s.lns {
		if l.name == name {
			return l
		}
	}
	return nil
}

// newConn registers a connection; it returns nil (and closes nc) when the
// server is shutting down or a reload has closed l. The caller runs c.serve,
// which calls wg.Done. A network connection beyond max_connections (the
// broker's or the listener's) is marked to be refused at CONNECT.
func (s *Server) newConn(nc net.Conn, l *listener) *conn {
	s.mu.Lock()
	if s.closing || l.closed {
		s.mu.Unlock()
		nc.Close()
		return nil
	}
	// Problem information is on until CONNECT says otherwise (its default).
	c := &conn{s: s, nc: nc, l: l, problemInfo: true}
	c.lc, _ = nc.(*loopConn)
	if l.network {
		n, m := s.open.Add(1), l.open.Add(1)
		lmax := l.settings().maxConnections
		over := func(open int64, limit int, factor int64) bool { return limit > 0 && open > factor*int64(limit) }
		c.overLimit = over(n, s.cfg.MaxConnections, 1) || over(m, lmax, 1)
		if over(n, s.cfg.MaxConnections, 2) || over(m, lmax, 2) {
			// So many waiting to be refused: do not spend a goroutine on
			// reading this one's CONNECT.
			s.open.Add(-1)
			l.open.Add(-1)
			s.stats.overLimit.Add(1)
			s.mu.Unlock()
			nc.Close()
			return nil
		}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	return c
}

// Shutdown stops accepting connections, disconnects every client (v5 clients
// get DISCONNECT 0x8B, Server shutting down), publishes the wills that are due,
// keeps delayed wills of persistent sessions in the store, closes the store and
// waits for every goroutine. When ctx ends first, connections are closed
// without waiting for their output to drain, and ctx's error is returned once
// everything has stopped.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		// Shutting down twice (a signal during a shutdown) is harmless.
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	close(s.stop)
	s.cancel()
	var lns []*listener
	if s.bound {
		// A reload that runs on closes what it opened itself.
		lns = s.lns
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, l := range lns {
		l.close()
	}
	for _, c := range conns {
		c.disconnect(packet.ServerShuttingDown, "server shutting down")
	}

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var ctxErr error
	select {
	case <-done:
	case <-ctx.Done():
		ctxErr = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			c.closeNow()
		}
		s.mu.Unlock()
		for _, c := range conns {
			c.closeNow()
		}
		<-done
	}
	s.stopTimers()
	// Timers that fired before stopTimers may still be running.
	s.wg.Wait()
	if s.loop != nil {
		s.loop.close()
	}
	err := s.store.Close()
	if ctxErr != nil {
		return ctxErr
	}
	if err != nil {
		return fmt.Errorf("broker: closing store: %w", err)
	}
	return nil
}
