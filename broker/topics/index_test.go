package topics

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

type session struct{ id string }

// matchCases are the examples of MQTT 3.1.1 and 5.0 section 4.7, plus the
// corners of empty levels and '$' topics. Each runs against both indexes.
var matchCases = []struct {
	filter, topic string
	want          bool
}{
	// 4.7.1.2 multi-level wildcard
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/tennis/player1/#", "sport/tennis/player2", false},
	{"sport/tennis/player1/#", "sport/tennis", false},
	{"sport/#", "sport", true},
	{"sport/#", "sports", false},
	{"#", "sport/tennis/player1", true},
	{"#", "/", true},
	{"sport/tennis/#", "sport/tennis", true},
	// 4.7.1.3 single-level wildcard
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player2", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true},
	{"+", "sport", true},
	{"+", "/finance", false},
	{"+/tennis/#", "sport/tennis/player1", true},
	{"+/tennis/#", "sport/tennis", true},
	{"sport/+/player1", "sport/tennis/player1", true},
	{"sport/+/player1", "sport/tennis/player2", false},
	{"+/+", "/finance", true},
	{"/+", "/finance", true},
	{"+", "", false}, // not a topic name
	// 4.7.2 topics beginning with $
	{"#", "$SYS/monitor/Clients", false},
	{"#", "$SYS", false},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"+", "$SYS", false},
	{"$SYS/#", "$SYS/monitor/Clients", true},
	{"$SYS/#", "$SYS", true},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"$SYS/monitor/Clients", "$SYS/monitor/Clients", true},
	{"a/+", "a/$SYS", true}, // the rule is about the first level only
	{"a/#", "a/$SYS/x", true},
	// 4.7.3 levels compare exactly, empty levels are levels
	{"ACCOUNTS", "Accounts", false},
	{"Accounts payable", "Accounts payable", true},
	{"/", "/", true},
	{"+/+", "/", true},
	{"+", "/", false},
	{"a//b", "a//b", true},
	{"a/+/b", "a//b", true},
	{"a/b", "a//b", false},
	{"a/#", "a//b", true},
	{"/a", "a", false},
	{"a", "a/", false},
	{"a/", "a/", true},
}

func hitKeys(hits []Hit[*session, int]) []string {
	var s []string
	for _, h := range hits {
		s = append(s, h.Key.id+"@"+h.Filter)
	}
	sort.Strings(s)
	return s
}

func TestMatchSpecExamples(t *testing.T) {
	for _, c := range matchCases {
		t.Run(c.filter+" "+c.topic, func(t *testing.T) {
			if c.topic != "" && refMatch(c.filter, c.topic) != c.want {
				t.Fatalf("the property tests' reference matcher disagrees with the spec")
			}
			x := NewIndex[*session, int]()
			s := &session{"s"}
			x.Subscribe(s, c.filter, 1)
			hits := x.Match(c.topic, nil, nil)
			if got := len(hits) == 1; got != c.want {
				t.Fatalf("Index: filter %q topic %q matched=%v want %v", c.filter, c.topic, got, c.want)
			}
			if c.want && (hits[0].Key != s || hits[0].Value != 1 || hits[0].Filter != c.filter) {
				t.Fatalf("hit = %+v", hits[0])
			}

			x.Subscribe(s, "$share/g/"+c.filter, 2)
			groups := 0
			x.Match(c.topic, nil, func(group, filter string, members []Hit[*session, int]) {
				groups++
				if group != "g" || filter != c.filter || len(members) != 1 || members[0].Filter != "$share/g/"+c.filter {
					t.Errorf("shared(%q, %q, %+v)", group, filter, members)
				}
			})
			if got := groups == 1; got != c.want {
				t.Fatalf("shared: filter %q topic %q matched=%v want %v", c.filter, c.topic, got, c.want)
			}

			r := NewRetained[int]()
			r.Set(c.topic, 7)
			var got []string
			r.Match(c.filter, func(topic string, v int) bool {
				got = append(got, topic)
				return true
			})
			if (len(got) == 1) != c.want {
				t.Fatalf("Retained: filter %q topic %q got %q want match=%v", c.filter, c.topic, got, c.want)
			}
		})
	}
}

func TestOverlappingSubscriptionsEachHit(t *testing.T) {
	x := NewIndex[*session, int]()
	a, b := &session{"a"}, &session{"b"}
	x.Subscribe(a, "home/+/temp", 1)
	x.Subscribe(a, "home/#", 2)
	x.Subscribe(a, "home/kitchen/temp", 3)
	x.Subscribe(b, "home/#", 4)
	x.Subscribe(b, "office/#", 5)
	got := hitKeys(x.Match("home/kitchen/temp", nil, nil))
	want := []string{"a@home/#", "a@home/+/temp", "a@home/kitchen/temp", "b@home/#"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestMatchAppendsToDst(t *testing.T) {
	x := NewIndex[*session, int]()
	x.Subscribe(&session{"a"}, "t", 1)
	prev := Hit[*session, int]{Key: &session{"prev"}}
	dst := x.Match("t", []Hit[*session, int]{prev}, nil)
	if len(dst) != 2 || dst[0] != prev || dst[1].Key.id != "a" {
		t.Fatalf("dst = %+v", dst)
	}
}

func TestSubscribeReplacesOptions(t *testing.T) {
	x := NewIndex[*session, int]()
	s := &session{"s"}
	if x.Subscribe(s, "a/b", 1) {
		t.Fatal("first Subscribe reported existed")
	}
	if !x.Subscribe(s, "a/b", 2) {
		t.Fatal("second Subscribe did not report existed")
	}
	if x.Len() != 1 {
		t.Fatalf("Len = %d after replace, want 1", x.Len())
	}
	hits := x.Match("a/b", nil, nil)
	if len(hits) != 1 || hits[0].Value != 2 {
		t.Fatalf("hits = %+v, want one with value 2", hits)
	}
	// The same filter shared is a different subscription.
	if x.Subscribe(s, "$share/g/a/b", 3) || x.Len() != 2 {
		t.Fatalf("shared subscription to same filter: Len = %d", x.Len())
	}
	if !x.Subscribe(s, "$share/g/a/b", 4) || x.Len() != 2 {
		t.Fatal("replacing shared subscription")
	}
}

func TestSharedGroups(t *testing.T) {
	x := NewIndex[*session, int]()
	s1, s2, s3 := &session{"1"}, &session{"2"}, &session{"3"}
	x.Subscribe(s1, "$share/g/a/+", 1)
	x.Subscribe(s2, "$share/g/a/+", 2)
	x.Subscribe(s3, "$share/h/a/+", 3)
	x.Subscribe(s3, "$share/g/a/#", 4) // same group name, other filter: another group
	x.Subscribe(s1, "a/+", 5)          // plain alongside shared

	groups := map[string][]string{}
	hits := x.Match("a/b", nil, func(group, filter string, members []Hit[*session, int]) {
		k := group + " " + filter
		if _, dup := groups[k]; dup {
			t.Errorf("group %q reported twice", k)
		}
		groups[k] = hitKeys(members)
	})
	want := map[string][]string{
		"g a/+": {"1@$share/g/a/+", "2@$share/g/a/+"},
		"h a/+": {"3@$share/h/a/+"},
		"g a/#": {"3@$share/g/a/#"},
	}
	if fmt.Sprint(groups) != fmt.Sprint(want) {
		t.Fatalf("groups %v\nwant   %v", groups, want)
	}
	if got := hitKeys(hits); !slices.Equal(got, []string{"1@a/+"}) {
		t.Fatalf("plain hits %q", got)
	}

	// Leaving a group shrinks it; the last member leaving removes it.
	x.Unsubscribe(s1, "$share/g/a/+")
	x.Unsubscribe(s3, "$share/h/a/+")
	groups = map[string][]string{}
	x.Match("a/b", nil, func(group, filter string, members []Hit[*session, int]) {
		groups[group+" "+filter] = hitKeys(members)
	})
	want = map[string][]string{"g a/+": {"2@$share/g/a/+"}, "g a/#": {"3@$share/g/a/#"}}
	if fmt.Sprint(groups) != fmt.Sprint(want) {
		t.Fatalf("after unsubscribe groups %v want %v", groups, want)
	}
	// A nil callback skips shared subscriptions.
	if hits := x.Match("a/b", nil, nil); len(hits) != 1 {
		t.Fatalf("hits with nil shared = %+v", hits)
	}
}

func TestUnsubscribeRemovesNodes(t *testing.T) {
	x := NewIndex[*session, int]()
	s, o := &session{"s"}, &session{"o"}
	filters := []string{"a/b/c", "a/b/+", "a/#", "+/+/+/x", "#", "/", "a//b", "$share/g/a/b/c", "$share/h/q/#", "a/b"}
	for _, f := range filters {
		x.Subscribe(s, f, 1)
		x.Subscribe(o, f, 1)
	}
	if x.Len() != 2*len(filters) {
		t.Fatalf("Len = %d", x.Len())
	}
	if x.Unsubscribe(s, "a/b/nope") || x.Unsubscribe(s, "zzz") || x.Unsubscribe(&session{"x"}, "a/b") {
		t.Fatal("Unsubscribe of a missing subscription reported existed")
	}
	before := x.nodes()
	for _, f := range filters {
		if !x.Unsubscribe(s, f) {
			t.Fatalf("Unsubscribe(%q) = false", f)
		}
		if x.Unsubscribe(s, f) {
			t.Fatalf("second Unsubscribe(%q) = true", f)
		}
	}
	if x.nodes() != before {
		t.Fatalf("nodes shared with another subscriber removed: %d -> %d", before, x.nodes())
	}
	for _, f := range filters {
		x.Unsubscribe(o, f)
	}
	if x.Len() != 0 || x.nodes() != 1 {
		t.Fatalf("after unsubscribing everything: Len %d nodes %d, want 0 and 1 (root)", x.Len(), x.nodes())
	}
}

func TestSubscriptionChurnDoesNotGrow(t *testing.T) {
	x := NewIndex[*session, int]()
	keep := &session{"keep"}
	x.Subscribe(keep, "sensors/+/temp", 1)
	base := x.nodes()
	for i := range 1000 {
		s := &session{fmt.Sprint(i)}
		f := fmt.Sprintf("sensors/dev%d/+/#", i)
		x.Subscribe(s, f, 1)
		x.Unsubscribe(s, f)
	}
	if x.nodes() != base || x.Len() != 1 {
		t.Fatalf("after churn nodes %d (want %d), Len %d", x.nodes(), base, x.Len())
	}
}

func TestManySubscribersOneFilter(t *testing.T) {
	// Past posThreshold the per-filter list keeps a position map; removal
	// order must not lose or duplicate anyone.
	x := NewIndex[*session, int]()
	var ss []*session
	for i := range 200 {
		s := &session{fmt.Sprint(i)}
		ss = append(ss, s)
		x.Subscribe(s, "#", i)
		x.Subscribe(s, "$share/g/#", i)
	}
	for i := 0; i < 200; i += 3 {
		x.Unsubscribe(ss[i], "#")
		x.Unsubscribe(ss[i], "$share/g/#")
	}
	want := map[string]bool{}
	for i := range 200 {
		if i%3 != 0 {
			want[ss[i].id] = true
		}
	}
	check := func(hits []Hit[*session, int]) {
		t.Helper()
		got := map[string]bool{}
		for _, h := range hits {
			if got[h.Key.id] {
				t.Fatalf("duplicate %s", h.Key.id)
			}
			got[h.Key.id] = true
			if fmt.Sprint(h.Value) != h.Key.id {
				t.Fatalf("value %d for %s", h.Value, h.Key.id)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("got %d subscribers, want %d", len(got), len(want))
		}
	}
	check(x.Match("t", nil, func(_, _ string, m []Hit[*session, int]) { check(m) }))
	for i := range 200 {
		if !x.Subscribe(ss[i], "#", i) == want[ss[i].id] {
			t.Fatalf("Subscribe existed mismatch for %d", i)
		}
	}
}

func TestInvalidFiltersIgnored(t *testing.T) {
	x := NewIndex[*session, int]()
	for _, f := range []string{"", "sport/tennis#", "sport/tennis/#/ranking", "sport+", "a/#/", "$share/g", "$share//a", "$share/g+/a", "$share/g/", "$share", "a\x00b"} {
		if ValidFilter(f) {
			t.Errorf("ValidFilter(%q) = true", f)
		}
		x.Subscribe(&session{"s"}, f, 1)
	}
	if x.Len() != 0 || x.nodes() != 1 {
		t.Fatalf("invalid filters stored: Len %d nodes %d", x.Len(), x.nodes())
	}
	for _, f := range []string{"#", "+", "/", "sport/tennis/#", "+/tennis/#", "sport/+/player1", "$share/g/#", "$SYS/#", "a//b"} {
		if !ValidFilter(f) {
			t.Errorf("ValidFilter(%q) = false", f)
		}
	}
	for topic, want := range map[string]bool{"a": true, "/": true, "$SYS/x": true, "": false, "a/+": false, "a/#": false} {
		if ValidTopic(topic) != want {
			t.Errorf("ValidTopic(%q) = %v", topic, !want)
		}
	}
	if g, f, ok := SplitShared("$share/grp/a/+/#"); !ok || g != "grp" || f != "a/+/#" {
		t.Errorf("SplitShared = %q %q %v", g, f, ok)
	}
	if _, _, ok := SplitShared("a/$share/g/x"); ok {
		t.Error("SplitShared accepted a non-shared filter")
	}
}

func TestMatchAllocatesNothing(t *testing.T) {
	x := NewIndex[*session, int]()
	for i := range 100 {
		s := &session{fmt.Sprint(i)}
		x.Subscribe(s, fmt.Sprintf("sensors/site%d/+/temp", i%10), i)
		x.Subscribe(s, "sensors/#", i)
		x.Subscribe(s, fmt.Sprintf("$share/g%d/sensors/+/+/temp", i%3), i)
	}
	dst := make([]Hit[*session, int], 0, 256)
	n := 0
	shared := func(string, string, []Hit[*session, int]) { n++ }
	allocs := testing.AllocsPerRun(100, func() {
		dst = x.Match("sensors/site3/dev7/temp", dst[:0], shared)
	})
	if allocs != 0 {
		t.Fatalf("Match allocated %.1f times per call", allocs)
	}
	if len(dst) != 110 {
		t.Fatalf("len(hits) = %d, want 110", len(dst))
	}
}

func TestConcurrentSubscribeUnsubscribeMatch(t *testing.T) {
	x := NewIndex[*session, int]()
	always := &session{"always"}
	x.Subscribe(always, "sensors/+/temp", 0)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				s := &session{fmt.Sprintf("%d-%d", w, i)}
				f := fmt.Sprintf("sensors/%d/%s", i%7, []string{"temp", "+", "#"}[i%3])
				x.Subscribe(s, f, i)
				x.Subscribe(s, "$share/g/"+f, i)
				x.Unsubscribe(s, f)
				x.Unsubscribe(s, "$share/g/"+f)
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			var dst []Hit[*session, int]
			for i := range 2000 {
				dst = x.Match(fmt.Sprintf("sensors/%d/temp", i%7), dst[:0], func(g, f string, m []Hit[*session, int]) {
					for _, h := range m {
						_ = h.Key.id // read members under the lock
					}
				})
				found := false
				for _, h := range dst {
					found = found || h.Key == always
				}
				if !found {
					t.Error("a stable subscription was missed during churn")
					return
				}
			}
		})
	}
	wg.Wait()
	if x.Len() != 1 || x.nodes() != 4 {
		t.Fatalf("after churn Len %d nodes %d, want 1 and 4", x.Len(), x.nodes())
	}
	if !strings.HasPrefix(x.Match("sensors/x/temp", nil, nil)[0].Filter, "sensors/") {
		t.Fatal("stable subscription lost")
	}
}
