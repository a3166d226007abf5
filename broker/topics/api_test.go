package topics

import "testing"

func TestIndexSubscribeMatch(t *testing.T) {
	type sess struct{ id int }
	a, b := &sess{1}, &sess{2}
	x := NewIndex[*sess, byte]()
	if x.Subscribe(a, "sport/#", 1) {
		t.Fatal("new subscription reported as existing")
	}
	x.Subscribe(b, "sport/+", 0)
	x.Subscribe(b, "$share/g/sport/+", 0)
	var groups []string
	hits := x.Match("sport/tennis", nil, func(g, f string, m []Hit[*sess, byte]) { groups = append(groups, g+" "+f) })
	if len(hits) != 2 || len(groups) != 1 || groups[0] != "g sport/+" {
		t.Fatalf("hits %v groups %v", hits, groups)
	}
}
