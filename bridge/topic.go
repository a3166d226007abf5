package bridge

import "strings"

// rule is a validated Rule with its filters on each side.
type rule struct {
	Rule
	qos          byte   // after the profile's cap
	localFilter  string // local_prefix + pattern
	remoteFilter string // remote_prefix + pattern
}

func (r *rule) out() bool {
	return r.Direction == "" || r.Direction == DirOut || r.Direction == DirBoth
}
func (r *rule) in() bool { return r.Direction == DirIn || r.Direction == DirBoth }

// toRemote maps a local topic that matched localFilter.
func (r *rule) toRemote(local string) string {
	return r.RemotePrefix + strings.TrimPrefix(local, r.LocalPrefix)
}

// toLocal maps a remote topic that matched remoteFilter.
func (r *rule) toLocal(remote string) string {
	return r.LocalPrefix + strings.TrimPrefix(remote, r.RemotePrefix)
}

// match reports whether topic matches filter (MQTT 4.7).
func match(filter, topic string) bool {
	if len(topic) > 0 && topic[0] == '$' && len(filter) > 0 && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		tl, trest, tmore := strings.Cut(topic, "/")
		switch {
		case fl == "#":
			return true
		case fl != "+" && fl != tl:
			return false
		}
		if !fmore && !tmore {
			return true
		}
		if !fmore {
			return false
		}
		if !tmore {
			return frest == "#"
		}
		filter, topic = frest, trest
	}
}
