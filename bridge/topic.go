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
