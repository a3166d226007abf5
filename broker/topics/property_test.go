package topics

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// refMatch is the MQTT 4.7 matching rule written as plainly as possible, to
// check the tries against.
func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, fl := range f {
		if fl == "#" {
			return true
		}
		if i >= len(t) || (fl != "+" && fl != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}

var (
	topicLevels  = []string{"", "a", "b", "$SYS"}
	filterLevels = []string{"", "a", "b", "$SYS", "+", "#"}
)

// The generators build valid names and filters directly rather than filtering
// out invalid draws, so rapid never runs out of valid examples.

func genTopic() *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		topic := strings.Join(rapid.SliceOfN(rapid.SampledFrom(topicLevels), 1, 4).Draw(t, "levels"), "/")
		if topic == "" { // a topic name has at least one character
			topic = "/"
		}
		return topic
	})
}

func genPlainFilter() *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		levels := rapid.SliceOfN(rapid.SampledFrom(filterLevels), 1, 4).Draw(t, "levels")
		for i := range len(levels) - 1 {
			if levels[i] == "#" {
				levels[i] = "+" // '#' only as the last level
			}
		}
		f := strings.Join(levels, "/")
		if f == "" {
			f = "/"
		}
		return f
	})
}

// genFilter draws plain and shared filters, shared ones in two groups.
func genFilter() *rapid.Generator[string] {
	return rapid.Custom(func(t *rapid.T) string {
		f := genPlainFilter().Draw(t, "filter")
		if g := rapid.IntRange(0, 3).Draw(t, "share"); g > 0 {
			f = fmt.Sprintf("$share/g%d/%s", g%2, f)
		}
		return f
	})
}

type subKey struct {
	k      *session
	filter string
}

func TestPropertyIndexMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sessions := []*session{{"s0"}, {"s1"}, {"s2"}}
		x := NewIndex[*session, int]()
		model := map[subKey]int{}
		for i := range rapid.IntRange(0, 40).Draw(t, "ops") {
			s := rapid.SampledFrom(sessions).Draw(t, "session")
			f := genFilter().Draw(t, "filter")
			_, had := model[subKey{s, f}]
			if rapid.IntRange(0, 2).Draw(t, "op") > 0 {
				if x.Subscribe(s, f, i) != had {
					t.Fatalf("Subscribe(%s, %q) existed mismatch", s.id, f)
				}
				model[subKey{s, f}] = i
			} else {
				if x.Unsubscribe(s, f) != had {
					t.Fatalf("Unsubscribe(%s, %q) existed mismatch", s.id, f)
				}
				delete(model, subKey{s, f})
			}
			if x.Len() != len(model) {
				t.Fatalf("Len %d, model %d", x.Len(), len(model))
			}
		}
		for range 10 {
			topic := genTopic().Draw(t, "topic")
			var wantPlain []string
			wantShared := map[string][]string{}
			for sk, v := range model {
				e := fmt.Sprintf("%s@%s=%d", sk.k.id, sk.filter, v)
				if g, f, ok := SplitShared(sk.filter); ok {
					if refMatch(f, topic) {
						wantShared[g+" "+f] = append(wantShared[g+" "+f], e)
					}
				} else if refMatch(sk.filter, topic) {
					wantPlain = append(wantPlain, e)
				}
			}
			gotShared := map[string][]string{}
			hits := x.Match(topic, nil, func(g, f string, members []Hit[*session, int]) {
				if _, dup := gotShared[g+" "+f]; dup {
					t.Fatalf("group %s %s reported twice", g, f)
				}
				var m []string
				for _, h := range members {
					m = append(m, fmt.Sprintf("%s@%s=%d", h.Key.id, h.Filter, h.Value))
				}
				gotShared[g+" "+f] = m
			})
			var gotPlain []string
			for _, h := range hits {
				gotPlain = append(gotPlain, fmt.Sprintf("%s@%s=%d", h.Key.id, h.Filter, h.Value))
			}
			sort.Strings(wantPlain)
			sort.Strings(gotPlain)
			if !slices.Equal(gotPlain, wantPlain) {
				t.Fatalf("topic %q: hits %q, want %q", topic, gotPlain, wantPlain)
			}
			for _, m := range wantShared {
				sort.Strings(m)
			}
			for _, m := range gotShared {
				sort.Strings(m)
			}
			if fmt.Sprint(gotShared) != fmt.Sprint(wantShared) {
				t.Fatalf("topic %q: shared %v, want %v", topic, gotShared, wantShared)
			}
		}
		for sk := range model {
			x.Unsubscribe(sk.k, sk.filter)
		}
		if x.Len() != 0 || x.nodes() != 1 {
			t.Fatalf("emptied index: Len %d nodes %d", x.Len(), x.nodes())
		}
	})
}

func TestPropertyRetainedMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := NewRetained[int]()
		model := map[string]int{}
		for i := range rapid.IntRange(0, 40).Draw(t, "ops") {
			topic := genTopic().Draw(t, "topic")
			_, had := model[topic]
			if rapid.IntRange(0, 2).Draw(t, "op") > 0 {
				r.Set(topic, i)
				model[topic] = i
			} else {
				if r.Delete(topic) != had {
					t.Fatalf("Delete(%q) mismatch", topic)
				}
				delete(model, topic)
			}
		}
		if r.Len() != len(model) {
			t.Fatalf("Len %d, model %d", r.Len(), len(model))
		}
		for topic, v := range model {
			if got, ok := r.Get(topic); !ok || got != v {
				t.Fatalf("Get(%q) = %d %v, want %d", topic, got, ok, v)
			}
		}
		for range 10 {
			filter := genPlainFilter().Draw(t, "filter")
			var want []string
			for topic, v := range model {
				if refMatch(filter, topic) {
					want = append(want, fmt.Sprintf("%s=%d", topic, v))
				}
			}
			sort.Strings(want)
			if got := retainedMatch(r, filter); !slices.Equal(got, want) {
				t.Fatalf("Match(%q) = %q, want %q", filter, got, want)
			}
		}
		for topic := range model {
			r.Delete(topic)
		}
		if r.Len() != 0 || r.nodes() != 1 {
			t.Fatalf("emptied index: Len %d nodes %d", r.Len(), r.nodes())
		}
	})
}

func TestGeneratorsDrawValidValues(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		if topic := genTopic().Draw(t, "topic"); !ValidTopic(topic) {
			t.Fatalf("invalid topic %q", topic)
		}
		if f := genFilter().Draw(t, "filter"); !ValidFilter(f) {
			t.Fatalf("invalid filter %q", f)
		}
	})
}
