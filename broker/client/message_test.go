package client

import "testing"

func TestMatchTopic(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a//c", true},
		{"+", "a", true},
		{"+", "/a", false},
		{"+/+", "/a", true},
		{"#", "a/b/c", true},
		{"a/#", "a", true}, // [MQTT-4.7.1-2] parent level
		{"a/#", "a/b/c", true},
		{"a/#", "ab", false},
		{"#", "$SYS/broker", false}, // [MQTT-4.7.2-1]
		{"+/broker", "$SYS/broker", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"$share/g/a/+", "a/b", true},
		{"$share/g/#", "x", true},
		{"a/b/", "a/b", false},
		{"a/b/", "a/b/", true},
	} {
		if got := MatchTopic(tc.filter, tc.topic); got != tc.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}
