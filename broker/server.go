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

	"gatewayd/broker/packet"
	"gatewayd/broker/state"
	"gatewayd/broker/topics"
)

// Options are the broker's collaborators. Every field may be left zero.
type Options struct {
	Store   state.Store   // nil: state.Memory{}
	Auth    Authenticator // nil: allow anonymous clients
	ACL     Authorizer    // nil: allow everything
	Logger  *slog.Logger  // nil: slog.Default()
	Version string        // reported in $SYS/broker/version
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

	// mu guards sessions, conns, listeners and the lifecycle flags. Lock
	// order: mu, then a session's mu, then a connection's outMu.
	mu        sync.Mutex
	sessions  map[string]*session
	conns     map[*conn]struct{}
	listeners []net.Listener
	started   bool
	closing   bool
	sessSeq   uint64

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
	s := &Server{
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

	type bind struct{ name, addr, key string }
	var binds []bind
	if len(s.cfg.Listeners) == 0 {
		binds = append(binds, bind{DefaultAddress, DefaultAddress, "broker.listeners"})
	}
	for i, l := range s.cfg.Listeners {
		name := l.Name
		if name == "" {
			name = l.Address
		}
		binds = append(binds, bind{name, l.Address, "broker." + keyIndex("listeners", i) + ".address"})
	}
	var lns []net.Listener
	for _, b := range binds {
		ln, err := net.Listen("tcp", b.addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("broker: cannot listen on %s (change %s): %w", b.addr, b.key, err)
		}
		lns = append(lns, ln)
	}
	// The store is loaded once the ports are ours, so a busy port leaves
	// nothing (timers of restored sessions) behind.
	snap, err := s.store.Load()
	if err == nil {
		err = s.restore(snap)
	}
	if err != nil {
		for _, l := range lns {
			l.Close()
		}
		s.stopTimers()
		return fmt.Errorf("broker: loading stored state: %w", err)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		for _, l := range lns {
			l.Close()
		}
		return errors.New("broker: shut down while starting")
	}
	s.listeners = lns
	for i, ln := range lns {
		s.wg.Add(1)
		go s.accept(ln, binds[i].name)
	}
	s.mu.Unlock()
	s.startSys()
	s.log.Info("broker started", "addrs", s.Addrs())
	return nil
}

// Addrs returns the addresses the listeners are bound to (useful with port 0).
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	addrs := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		addrs[i] = l.Addr()
	}
	return addrs
}

func (s *Server) accept(ln net.Listener, name string) {
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
			s.log.Warn("broker: accept failed", "listener", name, "err", err)
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
		if c := s.newConn(nc, name); c != nil {
			go c.serve()
		}
	}
}

// ServeConn serves an already-accepted connection, for example one end of a
// net.Pipe or a WebSocket, as if it had arrived on the named listener. It
// returns when the connection ends.
func (s *Server) ServeConn(nc net.Conn, listener string) {
	c := s.newConn(nc, listener)
	if c == nil {
		return
	}
	c.serve()
}

// newConn registers a connection; it returns nil (and closes nc) when the
// server is shutting down. The caller runs c.serve, which calls wg.Done.
func (s *Server) newConn(nc net.Conn, listener string) *conn {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return nil
	}
	// Problem information is on until CONNECT says otherwise (its default).
	c := &conn{s: s, nc: nc, listener: listener, problemInfo: true}
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
	lns := s.listeners
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	for _, l := range lns {
		l.Close()
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
	err := s.store.Close()
	if ctxErr != nil {
		return ctxErr
	}
	if err != nil {
		return fmt.Errorf("broker: closing store: %w", err)
	}
	return nil
}
