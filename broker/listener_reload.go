package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"

	"gatewayd/broker/packet"
)

// ListenerInfo describes one open listener.
type ListenerInfo struct {
	Name string   // name, or the configured address when it has none
	Addr net.Addr // the bound address
	Kind string   // mqtt, mqtts, ws or wss
	Path string   // ws and wss: the HTTP path
	// ID tells one opening of a listener from another: a listener a reload
	// closed and opened again (changed address, type, path or TLS) has a
	// new ID; one a reload left alone keeps its ID.
	ID uint64
}

// Listeners returns the open listeners, in configuration order; nil before
// Start.
func (s *Server) Listeners() []ListenerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.bound {
		return nil
	}
	out := make([]ListenerInfo, len(s.lns))
	for i, l := range s.lns {
		out[i] = ListenerInfo{Name: l.name, Addr: l.ln.Addr(), Kind: l.kind(), Path: l.cfg.Path, ID: l.serial}
	}
	return out
}

func (l *listener) kind() string {
	switch {
	case l.isWS() && l.isTLS():
		return "wss"
	case l.isWS():
		return "ws"
	case l.isTLS():
		return "mqtts"
	}
	return "mqtt"
}

// listenerIdentity is how a reload matches a configured listener with a
// running one: by name when it has one, otherwise by type and address.
func listenerIdentity(lc ListenerConfig) string {
	if lc.Name != "" {
		return "name " + lc.Name
	}
	t := lc.Type
	if t == "" {
		t = "mqtt"
	}
	return t + " " + lc.Address
}

// sameShape reports whether a running listener can take configuration lc in
// place: same address, type, path and TLS on or off. Anything else needs a
// new socket.
func sameShape(l *listener, lc ListenerConfig) bool {
	typ, path := lc.Type, lc.Path
	if typ == "" {
		typ = "mqtt"
	}
	if typ == "ws" && path == "" {
		path = "/mqtt"
	}
	ltyp := l.cfg.Type
	if ltyp == "" {
		ltyp = "mqtt"
	}
	return l.cfg.Address == lc.Address && ltyp == typ && l.cfg.Path == path && l.isTLS() == (lc.TLS != nil)
}

// listenerPlan is what a reload does to the listeners: next is the new
// list in configuration order, made of kept listeners (updated in place)
// and fresh ones (to be bound); gone are the running listeners it closes.
type listenerPlan struct {
	next  []*listener
	fresh []*listener
	gone  []*listener
	kept  []keptListener
}

// keptListener is a running listener and what a reload changes in it.
type keptListener struct {
	l       *listener
	set     *listenerSettings
	files   *TLSConfig  // new tls section (TLS listeners)
	tlsCfg  *tls.Config // read from files
	changed bool        // settings other than the key differ
}

// planListeners matches cfg's listeners with the running ones and reads
// every certificate the result needs; it changes nothing. Called with
// reloadMu held.
func (s *Server) planListeners(cfg *Config) (*listenerPlan, error) {
	lcs, keys := listenerConfigs(cfg)
	// Running listeners by identity; unnamed listeners of the same type and
	// address (port 0) are matched in order.
	running := map[string][]*listener{}
	for _, l := range s.lns {
		id := listenerIdentity(l.cfg)
		running[id] = append(running[id], l)
	}
	p := &listenerPlan{}
	kept := map[*listener]bool{}
	for i, lc := range lcs {
		id := listenerIdentity(lc)
		var old *listener
		if ls := running[id]; len(ls) > 0 {
			old, running[id] = ls[0], ls[1:]
		}
		if old != nil && sameShape(old, lc) {
			k, err := keepListener(old, lc, keys[i])
			if err != nil {
				return nil, fmt.Errorf("broker: reload: %w", err)
			}
			kept[old] = true
			p.kept = append(p.kept, k)
			p.next = append(p.next, old)
			continue
		}
		l, err := newListener(lc, keys[i])
		if err != nil {
			return nil, fmt.Errorf("broker: reload: %w", err)
		}
		p.fresh = append(p.fresh, l)
		p.next = append(p.next, l)
	}
	for _, l := range s.lns {
		if !kept[l] {
			p.gone = append(p.gone, l)
		}
	}
	return p, nil
}

// keepListener prepares the in-place update of running listener l to lc:
// its settings, and for a TLS listener the certificate, key and client CAs
// of lc's tls section, read now.
func keepListener(l *listener, lc ListenerConfig, key string) (keptListener, error) {
	cur := l.settings()
	k := keptListener{l: l, set: &listenerSettings{key: key, maxConnections: lc.MaxConnections, origins: lc.Origins,
		allowAnonymous: lc.AllowAnonymous, ratePerAddress: lc.MaxConnectionsPerSecondPerAddress}}
	k.changed = cur.maxConnections != lc.MaxConnections || !slices.Equal(cur.origins, lc.Origins) ||
		!reflect.DeepEqual(cur.allowAnonymous, lc.AllowAnonymous) ||
		!reflect.DeepEqual(cur.ratePerAddress, lc.MaxConnectionsPerSecondPerAddress)
	if lc.TLS != nil {
		files := *lc.TLS
		tc, err := loadTLS(&files, l.isWS())
		if err != nil {
			return k, fmt.Errorf("listener %s (%s.tls): %w", l.name, key, err)
		}
		k.files, k.tlsCfg = &files, tc
	}
	return k, nil
}

// openListeners binds the plan's fresh listeners. A fresh listener that
// wants the port of a listener the plan closes is bound once that one's
// socket is closed; the others are bound first, while every running
// listener still accepts. On error every socket bound here is closed, the
// running listeners accept again, and the error names the listener and the
// key to change. Called with reloadMu held, on a bound server.
func (s *Server) openListeners(p *listenerPlan) error {
	gonePorts := map[int][]*listener{}
	for _, l := range p.gone {
		if ta, ok := l.ln.Addr().(*net.TCPAddr); ok {
			gonePorts[ta.Port] = append(gonePorts[ta.Port], l)
		}
	}
	var first, later []*listener
	var paused []*listener // gone listeners whose sockets were closed early
	for _, l := range p.fresh {
		if port := wantedPort(l.cfg.Address); port != 0 && len(gonePorts[port]) > 0 {
			later = append(later, l)
			continue
		}
		first = append(first, l)
	}
	var bound []*listener
	fail := func(l *listener, err error) error {
		for _, b := range bound {
			b.ln.Close()
		}
		err = fmt.Errorf("broker: reload: cannot listen on %s for listener %s (change %s): %w",
			l.cfg.Address, l.name, l.settings().key+addrSuffix(l), err)
		if rerr := s.resumeListeners(paused); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	for _, l := range first {
		if err := l.bind(s.cfg.MaxConnectionsPerSecondPerAddress); err != nil {
			return fail(l, err)
		}
		bound = append(bound, l)
	}
	for _, l := range later {
		port := wantedPort(l.cfg.Address)
		for _, g := range gonePorts[port] {
			g.ln.Close()
			paused = append(paused, g)
		}
		delete(gonePorts, port)
		if err := l.bind(s.cfg.MaxConnectionsPerSecondPerAddress); err != nil {
			return fail(l, err)
		}
		bound = append(bound, l)
	}
	return nil
}

// wantedPort is the port of a listen address, 0 for any free port or one
// that cannot be read.
func wantedPort(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, err := net.LookupPort("tcp", port)
	if err != nil {
		return 0
	}
	return n
}

// resumeListeners opens again, on the addresses they had, the sockets of
// running listeners that a failed reload closed, and serves them.
func (s *Server) resumeListeners(ls []*listener) error {
	var errs []error
	for _, l := range ls {
		addr := l.ln.Addr().String()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			s.log.Error("broker: listener could not be opened again after a failed reload", "listener", l.name, "address", addr, "err", err)
			errs = append(errs, fmt.Errorf("broker: listener %s could not be opened again on %s: %w", l.name, addr, err))
			continue
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			ln.Close()
			continue
		}
		l.ln = ln
		s.wg.Add(1)
		go s.serveListener(l, ln)
		s.mu.Unlock()
	}
	return errors.Join(errs...)
}

// reloadListeners applies cfg's listeners: fresh ones are opened, kept ones
// get their new settings and certificates, and the ones gone are closed,
// their clients disconnected (v5: DISCONNECT 0x8B) as at shutdown, wills
// and sessions handled as for any connection that ends without a
// DISCONNECT from the client. apply runs, under mu, just before the new
// set takes over. On error nothing has changed. Called with reloadMu held.
func (s *Server) reloadListeners(cfg *Config, apply func()) error {
	p, err := s.planListeners(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	bound, closing := s.bound, s.closing
	s.mu.Unlock()
	if closing {
		return errors.New("broker: reload: shutting down")
	}
	if bound {
		if err := s.openListeners(p); err != nil {
			return err
		}
	}

	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		if bound {
			for _, l := range p.fresh {
				l.ln.Close()
			}
		}
		return errors.New("broker: reload: shutting down")
	}
	apply()
	for _, k := range p.kept {
		if k.tlsCfg != nil {
			k.l.tlsFiles.Store(k.files)
			k.l.tlsCfg.Store(k.tlsCfg)
		}
		if bound {
			k.set.settle(k.l.ln, s.cfg.MaxConnectionsPerSecondPerAddress, k.l.settings().rate)
		}
		k.l.set.Store(k.set)
	}
	s.lns = p.next
	var drop []*conn
	if len(p.gone) > 0 {
		for _, l := range p.gone {
			l.closed = true
		}
		for c := range s.conns {
			if c.l.closed {
				drop = append(drop, c)
			}
		}
	}
	if bound {
		for _, l := range p.fresh {
			if l.isWS() {
				l.http = s.newHTTP(l)
			}
			s.wg.Add(1)
			go s.serveListener(l, l.ln)
		}
	}
	s.mu.Unlock()

	if !bound {
		return nil
	}
	for _, l := range p.gone {
		l.close()
	}
	perListener := map[*listener]int{}
	for _, c := range drop {
		perListener[c.l]++
		c.disconnect(packet.ServerShuttingDown, "listener closed by a configuration reload")
	}
	for _, l := range p.gone {
		s.log.Info("broker: listener closed", "listener", l.name, "address", l.ln.Addr().String(),
			"type", l.kind(), "clients_disconnected", perListener[l])
	}
	for _, l := range p.fresh {
		s.logExposure(l)
	}
	for _, k := range p.kept {
		if k.changed {
			st := k.l.settings()
			rate := 0
			if st.rate != nil {
				rate = int(st.rate.perSecond)
			}
			s.log.Info("broker: listener settings changed", "listener", k.l.name, "anonymous", st.anonymous,
				"max_connections", st.maxConnections, "connections_per_second_per_address", rate, "origins", st.origins)
		}
	}
	return nil
}
