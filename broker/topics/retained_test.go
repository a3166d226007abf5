package topics

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
)

func retainedMatch(r *Retained[int], filter string) []string {
	var got []string
	r.Match(filter, func(topic string, v int) bool {
		got = append(got, fmt.Sprintf("%s=%d", topic, v))
		return true
	})
	sort.Strings(got)
	return got
}

func TestRetainedSetGetDelete(t *testing.T) {
	r := NewRetained[int]()
	r.Set("home/kitchen/temp", 1)
	r.Set("home/kitchen/temp", 2) // replaces
	r.Set("home/kitchen", 3)
	if r.Len() != 2 {
		t.Fatalf("Len = %d, want 2", r.Len())
	}
	if v, ok := r.Get("home/kitchen/temp"); !ok || v != 2 {
		t.Fatalf("Get = %d %v, want 2 true", v, ok)
	}
	if _, ok := r.Get("home"); ok {
		t.Fatal("Get of an intermediate level found a message")
	}
	if r.Delete("home") || r.Delete("nothing/here") {
		t.Fatal("Delete of a missing topic reported true")
	}
	if !r.Delete("home/kitchen") {
		t.Fatal("Delete(home/kitchen) = false")
	}
	if v, ok := r.Get("home/kitchen/temp"); !ok || v != 2 {
		t.Fatal("deleting a parent topic removed a child")
	}
	if _, ok := r.Get("home/kitchen"); ok || r.Len() != 1 {
		t.Fatal("deleted topic still there")
	}
	r.Set("a/+", 1) // not a topic name
	r.Set("", 1)
	if r.Len() != 1 {
		t.Fatalf("invalid topics stored: Len %d", r.Len())
	}
}

func TestRetainedMatch(t *testing.T) {
	r := NewRetained[int]()
	for i, topic := range []string{"sport", "sport/tennis/player1", "sport/tennis/player2", "sport/tennis/player1/ranking", "$SYS/broker/uptime", "/finance", "a//b"} {
		r.Set(topic, i)
	}
	cases := []struct {
		filter string
		want   []string
	}{
		{"sport/#", []string{"sport/tennis/player1/ranking=3", "sport/tennis/player1=1", "sport/tennis/player2=2", "sport=0"}},
		{"sport/tennis/+", []string{"sport/tennis/player1=1", "sport/tennis/player2=2"}},
		{"sport/+", nil},
		{"#", []string{"/finance=5", "a//b=6", "sport/tennis/player1/ranking=3", "sport/tennis/player1=1", "sport/tennis/player2=2", "sport=0"}},
		{"+/+", []string{"/finance=5"}},
		{"+/+/+", []string{"a//b=6", "sport/tennis/player1=1", "sport/tennis/player2=2"}},
		{"$SYS/#", []string{"$SYS/broker/uptime=4"}},
		{"+/broker/uptime", nil},
		{"sport/tennis#", nil}, // invalid filter
	}
	for _, c := range cases {
		if got := retainedMatch(r, c.filter); !slices.Equal(got, c.want) {
			t.Errorf("Match(%q) = %q, want %q", c.filter, got, c.want)
		}
	}
}

func TestRetainedMatchAndRangeStop(t *testing.T) {
	r := NewRetained[int]()
	for i := range 50 {
		r.Set(fmt.Sprintf("t/%d", i), i)
	}
	calls := 0
	r.Match("t/#", func(string, int) bool { calls++; return calls < 3 })
	if calls != 3 {
		t.Fatalf("Match called fn %d times after it returned false, want 3", calls)
	}
	calls = 0
	r.Match("+/+", func(string, int) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("Match(+/+) called fn %d times, want 1", calls)
	}
	calls = 0
	r.Range(func(string, int) bool { calls++; return calls < 5 })
	if calls != 5 {
		t.Fatalf("Range called fn %d times, want 5", calls)
	}
	all := map[string]int{}
	r.Range(func(topic string, v int) bool { all[topic] = v; return true })
	if len(all) != 50 || all["t/42"] != 42 {
		t.Fatalf("Range saw %d topics", len(all))
	}
}

func TestRetainedDeleteRemovesNodes(t *testing.T) {
	r := NewRetained[int]()
	r.Set("keep/me", 1)
	base := r.nodes()
	for i := range 1000 {
		topic := fmt.Sprintf("sensors/site%d/dev%d/temp", i%10, i)
		r.Set(topic, i)
		r.Set(topic+"/raw", i)
	}
	for i := range 1000 {
		topic := fmt.Sprintf("sensors/site%d/dev%d/temp", i%10, i)
		r.Delete(topic + "/raw")
		r.Delete(topic)
	}
	if r.Len() != 1 || r.nodes() != base {
		t.Fatalf("after churn Len %d nodes %d, want 1 and %d", r.Len(), r.nodes(), base)
	}
	r.Delete("keep/me")
	if r.nodes() != 1 {
		t.Fatalf("empty index has %d nodes, want 1 (root)", r.nodes())
	}
}

func TestRetainedConcurrentSetDeleteMatch(t *testing.T) {
	r := NewRetained[int]()
	r.Set("sensors/hall/temp", -1)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				topic := fmt.Sprintf("sensors/%d-%d/temp", w, i%50)
				r.Set(topic, i)
				if v, ok := r.Get(topic); !ok || v != i {
					t.Errorf("Get(%q) = %d %v right after Set(%d)", topic, v, ok, i)
					return
				}
				r.Delete(topic)
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 500 {
				found := false
				r.Match("sensors/+/temp", func(topic string, v int) bool {
					found = found || topic == "sensors/hall/temp"
					return true
				})
				r.Range(func(string, int) bool { return true })
				if !found {
					t.Error("a stable retained message was missed during churn")
					return
				}
			}
		})
	}
	wg.Wait()
	if r.Len() != 1 || r.nodes() != 4 {
		t.Fatalf("after churn Len %d nodes %d, want 1 and 4", r.Len(), r.nodes())
	}
}
