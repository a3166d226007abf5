package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// listener is one configured endpoint, or the stand-in for connections
// handed to ServeConn under a name no listener has (in-process clients).
//
// What makes a listener what it is (name, address, type, path, TLS or not)
// never changes: a reload that changes it closes the listener and opens a
// new one. The settings a reload applies in place are in set.
type listener struct {
	name    string
	cfg     ListenerConfig // as built: address, type, path, tls on or off
	network bool           // reached through a socket: connection limits apply

	set atomic.Pointer[listenerSettings]

	// ln is the bound socket and http the server of a ws listener. Both
	// are written only before the listener is served, or under the
	// server's mu by a reload that reopens the socket.
	ln     net.Listener
	http   *http.Server
	serial uint64 // set by bind: tells one opening of a listener from another
	// closed, under the server's mu: a reload removed the listener, so
	// connections still arriving through it are refused.
	closed bool

	// tlsCfg is the TLS configuration handed to each new handshake; Reload
	// swaps it, so connected clients keep theirs. nil without TLS.
	tlsCfg atomic.Pointer[tls.Config]
	// tlsBase wraps accepted connections: it hands each handshake tlsCfg.
	tlsBase *tls.Config
	// tlsFiles is the TLS section tlsCfg was read from, swapped with it: its
	// username_from is read at each CONNECT.
	tlsFiles atomic.Pointer[TLSConfig]

	open atomic.Int64 // open connections
}

// listenerSettings are what a reload changes on a running listener without
// closing it; each applies to connections accepted after the change.
type listenerSettings struct {
	key string // configuration key, for messages: broker.listeners[i]
	// anonymous: clients without a user name or certificate identity may
	// connect.
	anonymous      bool
	maxConnections int
	rate           *rateLimiter // nil: no connection rate limit
	origins        []string     // ws: cross-origin pages allowed
	// allowAnonymous and ratePerAddress are the configured values the two
	// above were derived from.
	allowAnonymous *bool
	ratePerAddress *int
}

func (l *listener) settings() *listenerSettings { return l.set.Load() }

func (l *listener) isTLS() bool { return l.cfg.TLS != nil }
func (l *listener) isWS() bool  { return l.cfg.Type == "ws" }

// close closes the listener's socket (and a ws listener's HTTP server), so
// its accept loop ends. Connections it accepted are not touched.
func (l *listener) close() {
	if l.http != nil {
		l.http.Close()
	}
	if l.ln != nil {
		l.ln.Close()
	}
}

// newListeners builds the configured listeners (or the default one) and
// reads their certificates; sockets are bound by Start.
func newListeners(cfg *Config) ([]*listener, error) {
	lcs, keys := listenerConfigs(cfg)
	var lns []*listener
	for i, lc := range lcs {
		l, err := newListener(lc, keys[i])
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		lns = append(lns, l)
	}
	return lns, nil
}

// listenerConfigs are cfg's listeners, or the default one, with their
// configuration keys.
func listenerConfigs(cfg *Config) ([]ListenerConfig, []string) {
	lcs := cfg.Listeners
	keys := make([]string, len(lcs))
	for i := range lcs {
		keys[i] = "broker." + keyIndex("listeners", i)
	}
	if len(lcs) == 0 {
		lcs = []ListenerConfig{{Address: DefaultAddress}}
		keys = []string{"broker.listeners"}
	}
	return lcs, keys
}

// newListener builds one listener and reads its certificates; key is its
// configuration key.
func newListener(lc ListenerConfig, key string) (*listener, error) {
	l := &listener{name: lc.Name, cfg: lc, network: true}
	if l.name == "" {
		l.name = lc.Address
	}
	if lc.Type == "ws" && l.cfg.Path == "" {
		l.cfg.Path = "/mqtt"
	}
	l.set.Store(&listenerSettings{key: key, maxConnections: lc.MaxConnections, origins: lc.Origins,
		allowAnonymous: lc.AllowAnonymous, ratePerAddress: lc.MaxConnectionsPerSecondPerAddress})
	if lc.TLS != nil {
		tc, err := loadTLS(lc.TLS, l.isWS())
		if err != nil {
			return nil, fmt.Errorf("listener %s (%s.tls): %w", l.name, key, err)
		}
		l.tlsCfg.Store(tc)
		l.tlsBase = &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				return l.tlsCfg.Load(), nil
			},
		}
		files := *lc.TLS
		l.tlsFiles.Store(&files)
	}
	return l, nil
}

// loadTLS reads a listener's certificate, key and client CAs.
func loadTLS(tc *TLSConfig, ws bool) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(tc.CertFile, tc.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s, key %s: %w", tc.CertFile, tc.KeyFile, err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if tc.ClientCAFile != "" {
		pem, err := os.ReadFile(tc.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CAs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CAs: %s holds no PEM certificate", tc.ClientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
		if tc.RequireClientCert {
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	if ws {
		c.NextProtos = []string{"http/1.1"}
	}
	return c, nil
}

// listenerSerial numbers the sockets listeners open.
var listenerSerial atomic.Uint64

// bind opens the listener's socket and settles its anonymous policy and
// rate limit (rate is the broker-wide max_connections_per_second_per_address).
func (l *listener) bind(rate int) error {
	ln, err := net.Listen("tcp", l.cfg.Address)
	if err != nil {
		return err
	}
	l.ln = ln
	l.serial = listenerSerial.Add(1)
	st := *l.settings()
	st.settle(ln, rate, nil)
	l.set.Store(&st)
	return nil
}

// settle derives the anonymous policy and the rate limiter from the
// configured values and the bound address: unless allow_anonymous says
// otherwise, anonymous clients are allowed only on a loopback address, and a
// loopback listener has no rate limit of its own. A limiter of the same rate
// in old is kept, with what it remembers.
func (st *listenerSettings) settle(ln net.Listener, rate int, old *rateLimiter) {
	ta, _ := ln.Addr().(*net.TCPAddr)
	loopback := ta != nil && ta.IP.IsLoopback()
	st.anonymous = loopback
	if st.allowAnonymous != nil {
		st.anonymous = *st.allowAnonymous
	}
	switch {
	case st.ratePerAddress != nil:
		rate = *st.ratePerAddress
	case loopback:
		rate = 0
	}
	st.rate = nil
	switch {
	case rate <= 0:
	case old != nil && old.perSecond == float64(rate):
		st.rate = old
	default:
		st.rate = newRateLimiter(rate)
	}
}

// logExposure says at start-up what the listener exposes to whom.
func (s *Server) logExposure(l *listener) {
	kind := "mqtt"
	switch {
	case l.isWS() && l.isTLS():
		kind = "wss"
	case l.isWS():
		kind = "ws"
	case l.isTLS():
		kind = "mqtts"
	}
	clientCert := "none"
	if t := l.tlsFiles.Load(); t != nil && t.ClientCAFile != "" {
		clientCert = "optional"
		if t.RequireClientCert {
			clientCert = "required"
		}
	}
	st := l.settings()
	rate := 0
	if st.rate != nil {
		rate = int(st.rate.perSecond)
	}
	attrs := []any{"listener", l.name, "address", l.ln.Addr().String(), "type", kind,
		"tls", l.isTLS(), "client_cert", clientCert, "anonymous", st.anonymous,
		"max_connections", st.maxConnections, "connections_per_second_per_address", rate,
		"password_file", s.cfg.PasswordFile, "acl_file", s.cfg.ACLFile}
	if l.isWS() {
		attrs = append(attrs, "path", l.cfg.Path, "origins", st.origins)
	}
	if f := l.tlsFiles.Load(); f != nil && f.UsernameFrom != "" {
		attrs = append(attrs, "username_from", f.UsernameFrom)
	}
	if s.opts.Auth != nil {
		attrs = append(attrs, "authenticator", "embedded")
	}
	s.log.Info("broker: listening", attrs...)
	ta, _ := l.ln.Addr().(*net.TCPAddr)
	if st.anonymous && s.opts.Auth == nil && (ta == nil || !ta.IP.IsLoopback()) {
		s.log.Warn("broker: listener accepts anonymous clients from the network (allow_anonymous: true)",
			"listener", l.name, "address", l.ln.Addr().String())
	}
}

// gate is a listener's accepting side: it closes at once the connections an
// address opens faster than its rate allows, and wraps the rest in TLS when
// the listener has it (the handshake runs later, on the connection's own
// goroutine, bounded by the connect timeout).
type gate struct {
	net.Listener
	s *Server
	l *listener
}

func (g gate) Accept() (net.Conn, error) {
	for {
		nc, err := g.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if r := g.l.settings().rate; r != nil && !r.allow(nc.RemoteAddr()) {
			g.s.stats.rateLimited.Add(1)
			g.s.log.Debug("broker: connection rate exceeded, closed", "listener", g.l.name, "remote", nc.RemoteAddr().String())
			nc.Close()
			continue
		}
		if g.l.tlsBase != nil {
			nc = tls.Server(nc, g.l.tlsBase)
		}
		return nc, nil
	}
}

// serveListener accepts connections on ln, the listener's socket, until it
// is closed (by Shutdown or a reload).
func (s *Server) serveListener(l *listener, ln net.Listener) {
	g := gate{Listener: ln, s: s, l: l}
	if l.isWS() {
		defer s.wg.Done()
		if err := l.http.Serve(g); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Warn("broker: websocket listener stopped", "listener", l.name, "err", err)
		}
		return
	}
	s.accept(g, l)
}

// newHTTP builds the HTTP server of a ws listener: one path, upgraded to a
// WebSocket carrying MQTT.
func (s *Server) newHTTP(l *listener) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc(l.cfg.Path, func(w http.ResponseWriter, r *http.Request) { s.serveWS(l, w, r) })
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: s.cfg.ConnectTimeout,
		// Only the upgrade is HTTP: a connection that stays plain HTTP
		// gets no more time than a client has to send CONNECT.
		IdleTimeout:    s.cfg.ConnectTimeout,
		MaxHeaderBytes: 8 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelInfo),
	}
}

// wsSubprotocol is the WebSocket subprotocol MQTT uses [MQTT-6.0.0-3].
const wsSubprotocol = "mqtt"

func (s *Server) serveWS(l *listener, w http.ResponseWriter, r *http.Request) {
	// Shutdown waits for the upgrade as for the connection.
	if !s.timerStart() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()
	wc, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wsSubprotocol}, OriginPatterns: l.settings().origins})
	if err != nil {
		s.log.Info("broker: websocket upgrade failed", "listener", l.name, "remote", r.RemoteAddr, "err", err)
		return
	}
	if wc.Subprotocol() != wsSubprotocol {
		s.log.Info("broker: websocket client did not ask for subprotocol mqtt", "listener", l.name, "remote", r.RemoteAddr)
		wc.Close(websocket.StatusProtocolError, "subprotocol mqtt required")
		return
	}
	// A WebSocket message usually carries one MQTT packet; leave room for
	// a client that packs two.
	wc.SetReadLimit(2*int64(s.cfg.MaxPacketSize) + 16)
	nc := websocket.NetConn(context.WithoutCancel(r.Context()), wc, websocket.MessageBinary)
	c := s.newConn(nc, l)
	if c == nil {
		return
	}
	c.tlsState = r.TLS
	c.serve()
}

// rateLimiter is a token bucket per source address: each address may open
// perSecond connections a second, in bursts of at most perSecond. It
// remembers a bounded number of addresses; an address whose bucket has
// refilled is forgotten first.
type rateLimiter struct {
	perSecond float64
	mu        sync.Mutex
	buckets   map[netip.Prefix]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxRateEntries bounds the addresses a rateLimiter remembers (about 100
// bytes each).
const maxRateEntries = 4096

func newRateLimiter(perSecond int) *rateLimiter {
	return &rateLimiter{perSecond: float64(perSecond), buckets: make(map[netip.Prefix]*bucket)}
}

// allow takes a token from addr's bucket and reports whether there was one.
func (r *rateLimiter) allow(addr net.Addr) bool {
	key, ok := rateKey(addr)
	if !ok {
		return true
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[key]
	if b == nil {
		if len(r.buckets) >= maxRateEntries {
			r.evict(now)
		}
		b = &bucket{tokens: r.perSecond, last: now}
		r.buckets[key] = b
	}
	b.tokens = min(r.perSecond, b.tokens+now.Sub(b.last).Seconds()*r.perSecond)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// evict forgets the addresses whose buckets are full again, or, if none is,
// one of them: under a flood from more addresses than it can remember the
// limiter lets some extra connections through rather than grow.
func (r *rateLimiter) evict(now time.Time) {
	for k, b := range r.buckets {
		if now.Sub(b.last).Seconds()*r.perSecond+b.tokens >= r.perSecond {
			delete(r.buckets, k)
		}
	}
	if len(r.buckets) >= maxRateEntries {
		for k := range r.buckets {
			delete(r.buckets, k)
			break
		}
	}
}

// rateKey is the IP address of addr, or its /64 for IPv6 (one host usually
// gets a whole /64).
func rateKey(addr net.Addr) (netip.Prefix, bool) {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p, true
}
