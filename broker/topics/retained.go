package topics

import (
	"strings"
	"sync"
)

// Retained holds the last retained message per topic name, in a trie with a
// node per level so a subscription's filter finds its messages without a scan
// of every topic. It is safe for concurrent use.
type Retained[V any] struct {
	mu   sync.RWMutex
	root *rnode[V]
	n    int
}

type rnode[V any] struct {
	parent   *rnode[V]
	key      string
	children map[string]*rnode[V]
	has      bool
	topic    string
	v        V
}

// NewRetained returns an empty retained-message index.
func NewRetained[V any]() *Retained[V] {
	return &Retained[V]{root: &rnode[V]{}}
}

// Set stores v as the retained message of topic, replacing any previous one.
// A topic that is not a valid topic name (see ValidTopic) is ignored.
func (r *Retained[V]) Set(topic string, v V) {
	if !ValidTopic(topic) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.root
	for i := 0; i <= len(topic); {
		end := levelEnd(topic, i)
		level := topic[i:end]
		c := n.children[level]
		if c == nil {
			c = &rnode[V]{parent: n, key: strings.Clone(level)}
			if n.children == nil {
				n.children = make(map[string]*rnode[V])
			}
			n.children[c.key] = c
		}
		n = c
		i = end + 1
	}
	if !n.has {
		r.n++
		n.has = true
		n.topic = strings.Clone(topic)
	}
	n.v = v
}

// Delete removes topic's retained message and reports whether there was one.
// Nodes left empty are removed so retained churn does not grow memory.
func (r *Retained[V]) Delete(topic string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.find(topic)
	if n == nil || !n.has {
		return false
	}
	var zero V
	n.has, n.topic, n.v = false, "", zero
	r.n--
	for n.parent != nil && !n.has && len(n.children) == 0 {
		p := n.parent
		delete(p.children, n.key)
		if len(p.children) == 0 {
			p.children = nil
		}
		n.parent = nil
		n = p
	}
	return true
}

// Get returns topic's retained message.
func (r *Retained[V]) Get(topic string) (V, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if n := r.find(topic); n != nil && n.has {
		return n.v, true
	}
	var zero V
	return zero, false
}

func (r *Retained[V]) find(topic string) *rnode[V] {
	if topic == "" {
		return nil
	}
	n := r.root
	for i := 0; i <= len(topic) && n != nil; {
		end := levelEnd(topic, i)
		n = n.children[topic[i:end]]
		i = end + 1
	}
	return n
}

// Len returns the number of retained messages.
func (r *Retained[V]) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.n
}

// Match calls fn for every retained topic matching filter (a plain topic
// filter: the broker strips a "$share/<group>/" prefix itself), until fn
// returns false. Topics starting with '$' are not matched by a filter starting
// with a wildcard [MQTT-4.7.2-1]. fn runs under the index's read lock and
// must not call methods of r. An invalid filter matches nothing.
func (r *Retained[V]) Match(filter string, fn func(topic string, v V) bool) {
	if !validPlainFilter(filter) {
		return
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.root.match(filter, 0, fn)
}

// match reports false once fn has asked to stop.
func (n *rnode[V]) match(filter string, i int, fn func(string, V) bool) bool {
	if i > len(filter) {
		return !n.has || fn(n.topic, n.v)
	}
	end := levelEnd(filter, i)
	switch level := filter[i:end]; level {
	case "#":
		// "sport/#" matches "sport" itself [MQTT-4.7.1-2].
		if n.has && !fn(n.topic, n.v) {
			return false
		}
		for k, c := range n.children {
			if i == 0 && strings.HasPrefix(k, "$") {
				continue
			}
			if !c.walk(fn) {
				return false
			}
		}
	case "+":
		for k, c := range n.children {
			if i == 0 && strings.HasPrefix(k, "$") {
				continue
			}
			if !c.match(filter, end+1, fn) {
				return false
			}
		}
	default:
		if c := n.children[level]; c != nil {
			return c.match(filter, end+1, fn)
		}
	}
	return true
}

// Range calls fn for every retained message, in no particular order, until fn
// returns false. fn runs under the index's read lock and must not call methods
// of r.
func (r *Retained[V]) Range(fn func(topic string, v V) bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	r.root.walk(fn)
}

func (n *rnode[V]) walk(fn func(string, V) bool) bool {
	if n.has && !fn(n.topic, n.v) {
		return false
	}
	for _, c := range n.children {
		if !c.walk(fn) {
			return false
		}
	}
	return true
}

// nodes counts the trie's nodes, root included, for tests.
func (r *Retained[V]) nodes() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var count func(n *rnode[V]) int
	count = func(n *rnode[V]) int {
		c := 1
		for _, ch := range n.children {
			c += count(ch)
		}
		return c
	}
	return count(r.root)
}
