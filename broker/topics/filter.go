package topics

import "strings"

// sharePrefix starts a shared subscription filter (MQTT 5.0, 4.8.2).
const sharePrefix = "$share/"

// ValidTopic reports whether topic is a valid MQTT topic name for a PUBLISH:
// at least one character and no wildcard characters. Empty levels are valid.
func ValidTopic(topic string) bool {
	return topic != "" && !strings.ContainsAny(topic, "+#\x00")
}

// ValidFilter reports whether filter is a valid MQTT topic filter, shared
// ("$share/<group>/<filter>") or not: '+' must occupy a whole level, '#' must
// occupy the whole last level.
func ValidFilter(filter string) bool {
	if _, f, ok := SplitShared(filter); ok {
		return validPlainFilter(f)
	}
	if strings.HasPrefix(filter, sharePrefix) || filter == "$share" {
		return false
	}
	return validPlainFilter(filter)
}

// SplitShared splits a valid shared subscription filter "$share/<group>/<filter>"
// into its group name and topic filter. ok is false if filter is not shared or
// malformed.
func SplitShared(filter string) (group, topicFilter string, ok bool) {
	rest, found := strings.CutPrefix(filter, sharePrefix)
	if !found {
		return "", "", false
	}
	group, topicFilter, found = strings.Cut(rest, "/")
	if !found || group == "" || strings.ContainsAny(group, "+#\x00") || !validPlainFilter(topicFilter) {
		return "", "", false
	}
	return group, topicFilter, true
}

func validPlainFilter(f string) bool {
	if f == "" || strings.IndexByte(f, 0) >= 0 {
		return false
	}
	for i := 0; i <= len(f); {
		end := levelEnd(f, i)
		level := f[i:end]
		if len(level) > 1 && strings.ContainsAny(level, "+#") {
			return false
		}
		if level == "#" && end != len(f) {
			return false
		}
		i = end + 1
	}
	return true
}

// levelEnd returns the index of the '/' ending the level that starts at i, or
// len(s) for the last level. Scanning instead of strings.Split keeps matching
// free of allocations.
func levelEnd(s string, i int) int {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return i + j
	}
	return len(s)
}
