package auth

import (
	"container/list"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"gatewayd/config"
)

// ThrottleConfig configures a Throttle. The zero value of each field means
// its default.
type ThrottleConfig struct {
	// Free is how many failures an address may have before its attempts are
	// delayed. Default 5.
	Free int `yaml:"free"`
	// Window is how long an address must go without a failure to be
	// forgiven. Default 1 minute; never less than MaxDelay.
	Window time.Duration `yaml:"window"`
	// BaseDelay is the delay after the Free-th failure; each further failure
	// doubles it, up to MaxDelay. Defaults 100 ms and 10 s.
	BaseDelay time.Duration `yaml:"base_delay"`
	MaxDelay  time.Duration `yaml:"max_delay"`
	// MaxEntries bounds the addresses remembered; the one that failed least
	// recently is forgotten first. Default 4096 (about 0.5 MiB).
	MaxEntries int `yaml:"max_entries"`
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time `yaml:"-"`
}

// Throttle slows down password guessing. It counts failed logins per source
// address: after Free failures, each new attempt from that address must wait
// (Delay), and each further failure doubles the wait, up to MaxDelay. A
// success, or Window without failures, forgives the address.
//
// An address is an IP address without its port; IPv6 addresses count per
// /64, since one host is usually given a whole /64. Other kinds of address
// (a Unix socket) share one count per network and address string.
//
// Throttle is safe for concurrent use. It delays, it never refuses: a client
// that waits may still log in. It bounds the guess rate per address to one
// per MaxDelay for each connection the address holds open, so the broker
// should also bound connections per address.
type Throttle struct {
	cfg ThrottleConfig

	mu      sync.Mutex
	entries map[throttleKey]*list.Element
	lru     list.List // of *throttleEntry, most recent failure at the front
}

type throttleKey struct {
	ip    netip.Addr
	other string
}

type throttleEntry struct {
	key       throttleKey
	failures  int
	last      time.Time // last failure
	notBefore time.Time // no attempt before this
}

// Validate reports settings that cannot work, as *config.FieldError values
// keyed by their YAML names.
func (c *ThrottleConfig) Validate() error {
	var errs []error
	if c.Free < 0 {
		errs = append(errs, config.Errorf("free", "%d is negative", c.Free))
	}
	if c.MaxEntries < 0 {
		errs = append(errs, config.Errorf("max_entries", "%d is negative", c.MaxEntries))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"window", c.Window}, {"base_delay", c.BaseDelay}, {"max_delay", c.MaxDelay}} {
		if d.v < 0 {
			errs = append(errs, config.Errorf(d.key, "%v is negative", d.v))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	d := NewThrottle(*c).cfg // with defaults
	if c.MaxDelay > 0 && c.MaxDelay < d.BaseDelay {
		errs = append(errs, config.Errorf("max_delay", "%v is less than base_delay %v", c.MaxDelay, d.BaseDelay))
	}
	if c.Window > 0 && c.Window < d.MaxDelay {
		errs = append(errs, config.Errorf("window", "%v is less than max_delay %v: the delay would be forgotten before it ends", c.Window, d.MaxDelay))
	}
	return errors.Join(errs...)
}

// NewThrottle returns a Throttle with cfg's defaults filled in.
func NewThrottle(cfg ThrottleConfig) *Throttle {
	if cfg.Free <= 0 {
		cfg.Free = 5
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = 100 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 10 * time.Second
	}
	cfg.MaxDelay = max(cfg.MaxDelay, cfg.BaseDelay)
	cfg.Window = max(cfg.Window, cfg.MaxDelay)
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 4096
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Throttle{cfg: cfg, entries: make(map[throttleKey]*list.Element)}
}

// Fail records a failed login from addr and returns how long the caller
// should wait before answering it: zero for the first Free-1 failures, then
// BaseDelay, doubling with each failure up to MaxDelay. Until that time has
// passed, Delay returns what remains of it to new attempts from addr.
func (t *Throttle) Fail(addr net.Addr) time.Duration {
	k := keyOf(addr)
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var e *throttleEntry
	if el, ok := t.entries[k]; ok {
		e = el.Value.(*throttleEntry)
		t.lru.MoveToFront(el)
		if now.Sub(e.last) >= t.cfg.Window {
			e.failures = 0
		}
	} else {
		t.evict(now)
		e = &throttleEntry{key: k}
		t.entries[k] = t.lru.PushFront(e)
	}
	e.failures++
	e.last = now
	d := t.delayFor(e.failures)
	e.notBefore = now.Add(d)
	return d
}

// Delay returns how long an attempt from addr starting now should wait
// before its password is checked: what remains of the delay set by the
// address's last failure, or zero.
func (t *Throttle) Delay(addr net.Addr) time.Duration {
	k := keyOf(addr)
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.entries[k]
	if !ok {
		return 0
	}
	e := el.Value.(*throttleEntry)
	if now.Sub(e.last) >= t.cfg.Window {
		return 0
	}
	if d := e.notBefore.Sub(now); d > 0 {
		return d
	}
	return 0
}

// Success forgives addr.
func (t *Throttle) Success(addr net.Addr) {
	k := keyOf(addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.entries[k]; ok {
		t.lru.Remove(el)
		delete(t.entries, k)
	}
}

// Len returns the number of addresses remembered.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// delayFor returns the delay after n failures.
func (t *Throttle) delayFor(n int) time.Duration {
	if n < t.cfg.Free {
		return 0
	}
	d := t.cfg.BaseDelay
	for i := t.cfg.Free; i < n && d < t.cfg.MaxDelay; i++ {
		d *= 2
	}
	return min(d, t.cfg.MaxDelay)
}

// evict makes room for one entry: it drops forgiven entries from the back of
// the list, then, if still full, the least recently failed one.
func (t *Throttle) evict(now time.Time) {
	for el := t.lru.Back(); el != nil; el = t.lru.Back() {
		e := el.Value.(*throttleEntry)
		if now.Sub(e.last) < t.cfg.Window && len(t.entries) < t.cfg.MaxEntries {
			return
		}
		t.lru.Remove(el)
		delete(t.entries, e.key)
	}
}

func keyOf(addr net.Addr) throttleKey {
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	case *net.IPAddr:
		ip = a.IP
	case nil:
		return throttleKey{other: "?"}
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			return ipKey(ap.Addr())
		}
		return throttleKey{other: addr.Network() + ":" + addr.String()}
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return throttleKey{other: addr.Network() + ":" + addr.String()}
	}
	return ipKey(a)
}

func ipKey(a netip.Addr) throttleKey {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		a = p.Addr()
	}
	return throttleKey{ip: a}
}
