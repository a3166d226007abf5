package testenv

import "testing"

func TestParseFactor(t *testing.T) {
	for _, c := range []struct {
		v        string
		emulated bool
		want     float64
	}{
		{"", false, 1},
		{"", true, EmulatedFactor},
		{"3", false, 3},
		{"2.5", true, 2.5},
		{"1", true, 1},
	} {
		got, err := parseFactor(c.v, c.emulated)
		if err != nil || got != c.want {
			t.Errorf("parseFactor(%q, %v) = %v, %v; want %v", c.v, c.emulated, got, err, c.want)
		}
	}
	for _, bad := range []string{"x", "0", "0.5", "-2", "NaN", "1e9"} {
		if _, err := parseFactor(bad, false); err == nil {
			t.Errorf("parseFactor(%q) accepted", bad)
		}
	}
}
