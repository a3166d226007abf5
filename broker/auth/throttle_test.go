package auth

import (
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"gatewayd/config"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newTestThrottle(cfg ThrottleConfig) (*Throttle, *fakeClock) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cfg.Now = clock.Now
	return NewThrottle(cfg), clock
}

func tcp(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestThrottleDelaysAfterFreeFailuresAndDoubles(t *testing.T) {
	th, _ := newTestThrottle(ThrottleConfig{Free: 3})
	addr := tcp("192.0.2.1:5000")
	want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond,
		10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := th.Fail(addr); got != w {
			t.Fatalf("failure %d: Fail = %v, want %v", i+1, got, w)
		}
		if got := th.Delay(addr); got != w {
			t.Fatalf("after failure %d: Delay = %v, want %v", i+1, got, w)
		}
	}
}

func TestThrottleDelayCountsDownWithTheClock(t *testing.T) {
	th, clock := newTestThrottle(ThrottleConfig{Free: 1, BaseDelay: time.Second})
	addr := tcp("192.0.2.1:5000")
	th.Fail(addr)
	clock.Advance(300 * time.Millisecond)
	if got := th.Delay(addr); got != 700*time.Millisecond {
		t.Fatalf("Delay = %v, want 700ms", got)
	}
	clock.Advance(700 * time.Millisecond)
	if got := th.Delay(addr); got != 0 {
		t.Fatalf("Delay after waiting = %v, want 0", got)
	}
	// The count is kept: the next failure doubles.
	if got := th.Fail(addr); got != 2*time.Second {
		t.Fatalf("next Fail = %v, want 2s", got)
	}
}

func TestThrottleCountsPerIPNotPort(t *testing.T) {
	th, _ := newTestThrottle(ThrottleConfig{Free: 2})
	th.Fail(tcp("192.0.2.1:1000"))
	if got := th.Fail(tcp("192.0.2.1:2000")); got == 0 {
		t.Fatal("a second port of the same IP got a fresh count")
	}
	if got := th.Delay(tcp("192.0.2.1:3000")); got == 0 {
		t.Fatal("a third port of the same IP is not delayed")
	}
	if got := th.Delay(tcp("192.0.2.2:1000")); got != 0 {
		t.Fatalf("another IP is delayed %v", got)
	}
	// IPv4 written as IPv4-mapped IPv6 is the same address.
	if got := th.Delay(&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}); got == 0 {
		t.Fatal("the IPv4-mapped form of a delayed address is not delayed")
	}
}

func TestThrottleCountsIPv6PerSlash64(t *testing.T) {
	th, _ := newTestThrottle(ThrottleConfig{Free: 2})
	th.Fail(tcp("[2001:db8:1:2::1]:1000"))
	th.Fail(tcp("[2001:db8:1:2:ffff::9]:1000"))
	if got := th.Delay(tcp("[2001:db8:1:2::77]:1")); got == 0 {
		t.Fatal("an address in the same /64 is not delayed")
	}
	if got := th.Delay(tcp("[2001:db8:1:3::1]:1")); got != 0 {
		t.Fatalf("an address in another /64 is delayed %v", got)
	}
}

func TestThrottleSuccessForgives(t *testing.T) {
	th, _ := newTestThrottle(ThrottleConfig{Free: 1})
	addr := tcp("192.0.2.1:5000")
	th.Fail(addr)
	th.Fail(addr)
	th.Success(addr)
	if got := th.Delay(addr); got != 0 {
		t.Fatalf("Delay after success = %v", got)
	}
	if got := th.Fail(addr); got != 100*time.Millisecond {
		t.Fatalf("Fail after success = %v, want the first delay again", got)
	}
	if th.Len() != 1 {
		t.Fatalf("Len = %d", th.Len())
	}
}

func TestThrottleWindowForgives(t *testing.T) {
	th, clock := newTestThrottle(ThrottleConfig{Free: 2, Window: time.Minute})
	addr := tcp("192.0.2.1:5000")
	th.Fail(addr)
	th.Fail(addr)
	clock.Advance(59 * time.Second)
	if got := th.Fail(addr); got != 200*time.Millisecond {
		t.Fatalf("Fail within the window = %v, want 200ms", got)
	}
	clock.Advance(time.Minute)
	if got := th.Delay(addr); got != 0 {
		t.Fatalf("Delay after a quiet window = %v", got)
	}
	if got := th.Fail(addr); got != 0 {
		t.Fatalf("Fail after a quiet window = %v, want a fresh count", got)
	}
}

func TestThrottleRemembersBoundedAddresses(t *testing.T) {
	th, clock := newTestThrottle(ThrottleConfig{Free: 1, MaxEntries: 3})
	a, b, c, d := tcp("192.0.2.1:1"), tcp("192.0.2.2:1"), tcp("192.0.2.3:1"), tcp("192.0.2.4:1")
	th.Fail(a)
	th.Fail(b)
	th.Fail(c)
	th.Fail(a) // a failed most recently; b least recently
	th.Fail(d)
	if th.Len() != 3 {
		t.Fatalf("Len = %d, want 3", th.Len())
	}
	if th.Delay(b) != 0 {
		t.Fatal("the least recently failed address was kept")
	}
	for _, x := range []net.Addr{a, c, d} {
		if th.Delay(x) == 0 {
			t.Fatalf("%v was forgotten", x)
		}
	}
	// Forgiven entries go first, before a full table forgets anyone early.
	clock.Advance(2 * time.Minute)
	th.Fail(b)
	if th.Len() != 1 {
		t.Fatalf("Len = %d after the window passed, want only the new entry", th.Len())
	}
}

func TestThrottleOtherAddressKinds(t *testing.T) {
	th, _ := newTestThrottle(ThrottleConfig{Free: 1})
	unix := &net.UnixAddr{Name: "/run/gatewayd.sock", Net: "unix"}
	th.Fail(unix)
	if th.Delay(unix) == 0 {
		t.Fatal("unix socket peers are not counted")
	}
	th.Fail(nil)
	if th.Delay(nil) == 0 {
		t.Fatal("a nil address is not counted")
	}
	if th.Delay(tcp("192.0.2.1:1")) != 0 {
		t.Fatal("a TCP peer shares the unix socket's count")
	}
}

func TestThrottleConcurrentUse(t *testing.T) {
	th, _ := newTestThrottle(ThrottleConfig{Free: 1000, MaxEntries: 16})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				addr := &net.TCPAddr{IP: net.IPv4(10, 0, byte(i), byte(j%32)), Port: j}
				th.Fail(addr)
				th.Delay(addr)
				if j%5 == 0 {
					th.Success(addr)
				}
			}
		})
	}
	wg.Wait()
	if n := th.Len(); n > 16 {
		t.Fatalf("Len = %d, want at most 16", n)
	}
}

func TestThrottleConfigValidate(t *testing.T) {
	if err := (&ThrottleConfig{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	tests := []struct {
		cfg  ThrottleConfig
		want string
	}{
		{ThrottleConfig{Free: -1, MaxEntries: -2}, "free: -1 is negative\nmax_entries: -2 is negative"},
		{ThrottleConfig{Window: -time.Second}, "window: -1s is negative"},
		{ThrottleConfig{BaseDelay: 2 * time.Second, MaxDelay: time.Second}, "max_delay: 1s is less than base_delay 2s"},
		{ThrottleConfig{MaxDelay: 50 * time.Millisecond}, "max_delay: 50ms is less than base_delay 100ms"},
		{ThrottleConfig{Window: time.Second}, "window: 1s is less than max_delay 10s"},
		{ThrottleConfig{Window: time.Second, MaxDelay: 5 * time.Second}, "window: 1s is less than max_delay 5s"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		var fe *config.FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%+v: error %v is not a *config.FieldError", tt.cfg, err)
			continue
		}
		if !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("%+v: error %q, want %q", tt.cfg, err, tt.want)
		}
	}
	ok := ThrottleConfig{Free: 3, Window: time.Hour, BaseDelay: time.Second, MaxDelay: time.Minute, MaxEntries: 10}
	if err := ok.Validate(); err != nil {
		t.Errorf("%+v: %v", ok, err)
	}
}
