package topics

import (
	"strings"
	"sync"
)

// Hit is one subscription matching a topic: the subscriber, its options, and
// the filter exactly as it subscribed (for a shared subscription, the whole
// "$share/<group>/<filter>").
type Hit[K comparable, V any] struct {
	Key    K
	Value  V
	Filter string
}

// Index is the subscription index: a trie with a node per topic-filter level.
// K identifies a subscriber session, V its subscription options. It is safe
// for concurrent use; Match takes only a read lock.
type Index[K comparable, V any] struct {
	mu   sync.RWMutex
	root *node[K, V]
	n    int
}

type node[K comparable, V any] struct {
	parent *node[K, V]
	key    string // level under parent; "+" and "#" for the wildcard children
	// Wildcards have their own fields so Match never hashes them.
	children map[string]*node[K, V]
	plus     *node[K, V]
	hash     *node[K, V]
	subs     subList[K, V]
	groups   []*group[K, V] // few per filter, so a slice beats a map
}

type group[K comparable, V any] struct {
	name    string
	filter  string // topic filter without the "$share/<group>/" prefix
	members subList[K, V]
}

func (n *node[K, V]) empty() bool {
	return len(n.children) == 0 && n.plus == nil && n.hash == nil && len(n.subs.hits) == 0 && len(n.groups) == 0
}

// NewIndex returns an empty subscription index.
func NewIndex[K comparable, V any]() *Index[K, V] {
	return &Index[K, V]{root: &node[K, V]{}}
}

// Len returns the number of subscriptions, shared ones included.
func (x *Index[K, V]) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.n
}

// Subscribe adds or replaces k's subscription to filter, which may be shared
// ("$share/<group>/<filter>"). It reports whether k already had a
// subscription to this exact filter, which is now replaced. A filter that is
// not valid (see ValidFilter) is ignored and reports false: the broker must
// validate filters to answer SUBACK anyway. "$share/" filters are treated as
// shared whatever the client's protocol version; whether to accept them is the
// broker's call.
func (x *Index[K, V]) Subscribe(k K, filter string, v V) (existed bool) {
	groupName, f, shared := SplitShared(filter)
	if !shared {
		if !ValidFilter(filter) {
			return false
		}
		f = filter
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.root
	for i := 0; i <= len(f); {
		end := levelEnd(f, i)
		n = n.child(f[i:end])
		i = end + 1
	}
	h := Hit[K, V]{Key: k, Value: v, Filter: filter}
	if shared {
		g := n.group(groupName)
		if g == nil {
			g = &group[K, V]{name: strings.Clone(groupName), filter: strings.Clone(f)}
			n.groups = append(n.groups, g)
		}
		existed = g.members.set(h)
	} else {
		existed = n.subs.set(h)
	}
	if !existed {
		x.n++
	}
	return existed
}

// Unsubscribe removes k's subscription to filter and reports whether there was
// one. Nodes left empty are removed so subscription churn does not grow memory.
func (x *Index[K, V]) Unsubscribe(k K, filter string) (existed bool) {
	groupName, f, shared := SplitShared(filter)
	if !shared {
		f = filter
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.root
	for i := 0; i <= len(f) && n != nil; {
		end := levelEnd(f, i)
		n = n.lookup(f[i:end])
		i = end + 1
	}
	if n == nil {
		return false
	}
	if shared {
		for i, g := range n.groups {
			if g.name != groupName {
				continue
			}
			existed = g.members.remove(k)
			if len(g.members.hits) == 0 {
				last := len(n.groups) - 1
				n.groups[i] = n.groups[last]
				n.groups[last] = nil
				n.groups = n.groups[:last]
				if last == 0 {
					n.groups = nil
				}
			}
			break
		}
	} else {
		existed = n.subs.remove(k)
	}
	if existed {
		x.n--
		n.prune()
	}
	return existed
}

// Match appends to dst every plain subscription matching topic (a topic
// name), one Hit per (subscriber, filter), so a subscriber with overlapping
// filters gets several. For each shared group (group name and filter) with a
// matching filter it calls shared once with all the group's members, so the
// broker can pick a connected one; shared may be nil to skip shared
// subscriptions.
//
// Match allocates nothing when dst has room. shared runs under the index's
// read lock: it must not call methods of x, and members is the index's own
// storage, to be read (not modified or kept) until shared returns. Each
// member's Filter is the whole "$share/<group>/<filter>" it subscribed with.
func (x *Index[K, V]) Match(topic string, dst []Hit[K, V], shared func(group string, filter string, members []Hit[K, V])) []Hit[K, V] {
	if topic == "" {
		return dst
	}
	// No nats-style match cache: a hit would skip most of the walk, but a
	// gateway publishes on tens of thousands of distinct sensor topics, more
	// than a bounded cache holds, and refilling it on misses allocates and
	// serialises publishers of the same topic.
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.root.match(topic, 0, topic[0] == '$', dst, shared)
}

// match walks the levels of topic starting at byte i. i past the end means
// every level has been consumed.
func (n *node[K, V]) match(topic string, i int, dollar bool, dst []Hit[K, V], shared func(string, string, []Hit[K, V])) []Hit[K, V] {
	if i > len(topic) {
		dst = n.emit(dst, shared)
		if n.hash != nil { // "sport/#" matches "sport" [MQTT-4.7.1-2]
			dst = n.hash.emit(dst, shared)
		}
		return dst
	}
	end := levelEnd(topic, i)
	// Filters starting with a wildcard do not match topics starting with '$'
	// [MQTT-4.7.2-1].
	wild := i != 0 || !dollar
	if wild && n.hash != nil {
		dst = n.hash.emit(dst, shared)
	}
	if c := n.children[topic[i:end]]; c != nil {
		dst = c.match(topic, end+1, dollar, dst, shared)
	}
	if wild && n.plus != nil {
		dst = n.plus.match(topic, end+1, dollar, dst, shared)
	}
	return dst
}

func (n *node[K, V]) emit(dst []Hit[K, V], shared func(string, string, []Hit[K, V])) []Hit[K, V] {
	dst = append(dst, n.subs.hits...)
	if shared != nil {
		for _, g := range n.groups {
			shared(g.name, g.filter, g.members.hits)
		}
	}
	return dst
}

func (n *node[K, V]) group(name string) *group[K, V] {
	for _, g := range n.groups {
		if g.name == name {
			return g
		}
	}
	return nil
}

func (n *node[K, V]) lookup(level string) *node[K, V] {
	switch level {
	case "+":
		return n.plus
	case "#":
		return n.hash
	}
	return n.children[level]
}

// child returns the node for level under n, creating it.
func (n *node[K, V]) child(level string) *node[K, V] {
	if c := n.lookup(level); c != nil {
		return c
	}
	// Clone so the trie never pins the caller's (possibly large) buffer.
	c := &node[K, V]{parent: n, key: strings.Clone(level)}
	switch level {
	case "+":
		n.plus = c
	case "#":
		n.hash = c
	default:
		if n.children == nil {
			n.children = make(map[string]*node[K, V])
		}
		n.children[c.key] = c
	}
	return c
}

// prune removes n and its ancestors while they hold nothing.
func (n *node[K, V]) prune() {
	for n.parent != nil && n.empty() {
		p := n.parent
		switch {
		case p.plus == n:
			p.plus = nil
		case p.hash == n:
			p.hash = nil
		default:
			delete(p.children, n.key)
			if len(p.children) == 0 {
				p.children = nil // a drained map keeps its buckets
			}
		}
		n.parent = nil
		n = p
	}
}

// subList is the subscriptions at one node or of one shared group, kept as a
// slice of ready-made Hits so Match copies them with a single append.
type subList[K comparable, V any] struct {
	hits []Hit[K, V]
	pos  map[K]int // index into hits, only once the list is long
}

// posThreshold is the length above which a subList keeps a position map; a
// linear scan is cheaper below it, and popular filters ("#") can have
// thousands of subscribers.
const posThreshold = 16

func (s *subList[K, V]) find(k K) int {
	if s.pos != nil {
		if i, ok := s.pos[k]; ok {
			return i
		}
		return -1
	}
	for i := range s.hits {
		if s.hits[i].Key == k {
			return i
		}
	}
	return -1
}

func (s *subList[K, V]) set(h Hit[K, V]) (existed bool) {
	if i := s.find(h.Key); i >= 0 {
		s.hits[i] = h
		return true
	}
	s.hits = append(s.hits, h)
	switch {
	case s.pos != nil:
		s.pos[h.Key] = len(s.hits) - 1
	case len(s.hits) > posThreshold:
		s.pos = make(map[K]int, len(s.hits))
		for i := range s.hits {
			s.pos[s.hits[i].Key] = i
		}
	}
	return false
}

func (s *subList[K, V]) remove(k K) bool {
	i := s.find(k)
	if i < 0 {
		return false
	}
	last := len(s.hits) - 1
	if i != last {
		s.hits[i] = s.hits[last]
		if s.pos != nil {
			s.pos[s.hits[i].Key] = i
		}
	}
	s.hits[last] = Hit[K, V]{} // drop references for the GC
	s.hits = s.hits[:last]
	if s.pos != nil {
		delete(s.pos, k)
		if last <= posThreshold/2 {
			s.pos = nil
		}
	}
	switch {
	case last == 0:
		s.hits = nil
	case cap(s.hits) > 32 && last*4 < cap(s.hits):
		// Shrink so a burst of subscribers does not pin memory forever.
		s.hits = append([]Hit[K, V](nil), s.hits...)
	}
	return true
}

// nodes counts the trie's nodes, root included; tests use it to check that
// Unsubscribe frees what Subscribe built.
func (x *Index[K, V]) nodes() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var count func(n *node[K, V]) int
	count = func(n *node[K, V]) int {
		c := 1
		for _, ch := range n.children {
			c += count(ch)
		}
		if n.plus != nil {
			c += count(n.plus)
		}
		if n.hash != nil {
			c += count(n.hash)
		}
		return c
	}
	return count(x.root)
}
