package auth

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"gatewayd/broker/topics"
)

// Access is what a rule grants: Read (delivery and subscribe), Write
// (publish), both, or Deny (neither, whatever other rules say).
type Access uint8

const (
	Read      Access = 1 << iota // receive messages, subscribe
	Write                        // publish
	Deny                         // overrides every grant
	ReadWrite = Read | Write
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case ReadWrite:
		return "readwrite"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("Access(%d)", uint8(a))
}

// ACL is a loaded access control list. It is immutable and safe for
// concurrent use; to pick up changes, load the file again and swap.
//
// A check looks at every rule that applies to the client, so it costs time
// in proportion to the rules for that user plus the patterns; it does not
// allocate.
type ACL struct {
	anonymous []aclRule            // topic lines before any user line
	users     map[string][]aclRule // topic lines in user sections
	patterns  []aclRule            // pattern lines, for every client
}

type aclRule struct {
	access Access
	levels []aclLevel
	subst  bool // has a %c or %u level
}

type levelKind uint8

const (
	literal levelKind = iota
	plusLevel
	hashLevel
	clientLevel // %c
	userLevel   // %u
)

type aclLevel struct {
	kind levelKind
	text string // for literal
}

// LoadACLFile reads an access control file in Mosquitto's acl_file format
// (see the package documentation). Errors name the file and line.
func LoadACLFile(path string) (*ACL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: acl file: %w", err)
	}
	return parseACL(path, string(data))
}

func parseACL(path, data string) (*ACL, error) {
	a := &ACL{users: make(map[string][]aclRule)}
	var (
		errs   []error
		user   string
		inUser bool
	)
	for i, line := range strings.Split(data, "\n") {
		text := strings.TrimSpace(line)
		if text == "" || text[0] == '#' {
			continue
		}
		keyword, rest := cutWord(text)
		var err error
		switch keyword {
		case "user":
			if rest == "" {
				err = errors.New("user: missing user name")
				break
			}
			user, inUser = rest, true
		case "topic", "pattern":
			var r aclRule
			r, err = parseRule(keyword, rest)
			switch {
			case err != nil:
			case keyword == "pattern":
				a.patterns = append(a.patterns, r)
			case inUser:
				a.users[user] = append(a.users[user], r)
			default:
				a.anonymous = append(a.anonymous, r)
			}
		default:
			err = fmt.Errorf("unknown keyword %q (want user, topic or pattern)", keyword)
		}
		if err != nil {
			errs = append(errs, &LineError{Path: path, Line: i + 1, Err: err})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

// cutWord splits s at its first run of spaces and tabs.
func cutWord(s string) (word, rest string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeft(s[i:], " \t")
}

// parseRule parses what follows "topic" or "pattern": an optional access
// word, then the topic filter, which may contain spaces.
func parseRule(keyword, rest string) (aclRule, error) {
	r := aclRule{access: ReadWrite}
	filter := rest
	word, after := cutWord(rest)
	switch word {
	case "read":
		r.access, filter = Read, after
	case "write":
		r.access, filter = Write, after
	case "readwrite":
		r.access, filter = ReadWrite, after
	case "deny":
		r.access, filter = Deny, after
	}
	if filter == "" {
		return r, fmt.Errorf("%s: missing topic filter", keyword)
	}
	if strings.HasPrefix(filter, "$share/") {
		return r, fmt.Errorf("%s %q: write the topic filter without $share/<group>/; rules apply to shared subscriptions through it", keyword, filter)
	}
	if !topics.ValidFilter(filter) {
		return r, fmt.Errorf("%s %q: not a valid topic filter ('+' and '#' must fill a whole level, '#' only the last)", keyword, filter)
	}
	for _, l := range strings.Split(filter, "/") {
		lv := aclLevel{kind: literal, text: l}
		switch {
		case l == "+":
			lv.kind = plusLevel
		case l == "#":
			lv.kind = hashLevel
		case keyword == "pattern" && l == "%c":
			lv.kind, r.subst = clientLevel, true
		case keyword == "pattern" && l == "%u":
			lv.kind, r.subst = userLevel, true
		case keyword == "pattern" && (strings.Contains(l, "%c") || strings.Contains(l, "%u")):
			return r, fmt.Errorf("pattern %q: %%c and %%u must fill a whole topic level, not part of %q", filter, l)
		}
		r.levels = append(r.levels, lv)
	}
	return r, nil
}

// Allowed reports whether the client with user name user ("" for a client
// without one) and client ID clientID may have access to topic: Write to
// publish to it, Read to be sent a message published to it. Any matching deny
// rule refuses, whatever the order of the rules.
func (a *ACL) Allowed(user, clientID, topic string, access Access) bool {
	if access == 0 || access&^ReadWrite != 0 || !topics.ValidTopic(topic) {
		return false
	}
	var granted Access
	for _, rules := range [2][]aclRule{a.rulesFor(user), a.patterns} {
		for i := range rules {
			r := &rules[i]
			switch r.fill(user, clientID) {
			case absent:
				continue
			case hostile:
				if r.access == Deny {
					return false
				}
				continue
			}
			if r.matchTopic(topic, user, clientID) {
				if r.access == Deny {
					return false
				}
				granted |= r.access
			}
		}
	}
	return granted&access == access
}

// CanSubscribe reports whether the client may subscribe to filter. The filter
// must be covered by a rule granting Read: every topic it matches is matched
// by that rule (sensors/# covers sensors/+/temp; it does not cover #). And no
// deny rule may intersect it: if some topic is matched by both the filter and
// a deny rule, the subscription is refused, even though other topics under it
// would be allowed (deny sensors/secret refuses sensors/#; subscribe to
// narrower filters instead). Delivery is still checked per message with
// Allowed(..., Read). A shared subscription, $share/<group>/<filter>, is
// judged by its filter.
func (a *ACL) CanSubscribe(user, clientID, filter string) bool {
	if !topics.ValidFilter(filter) {
		return false
	}
	if rest, ok := strings.CutPrefix(filter, "$share/"); ok {
		_, filter, _ = strings.Cut(rest, "/")
	}
	f := strings.Split(filter, "/")
	covered := false
	for _, rules := range [2][]aclRule{a.rulesFor(user), a.patterns} {
		for i := range rules {
			r := &rules[i]
			switch r.fill(user, clientID) {
			case absent:
				continue
			case hostile:
				if r.access == Deny {
					return false
				}
				continue
			}
			levels := r.resolve(user, clientID)
			switch {
			case r.access == Deny:
				if intersects(levels, f) {
					return false
				}
			case r.access&Read != 0 && !covered:
				covered = covers(levels, f)
			}
		}
	}
	return covered
}

func (a *ACL) rulesFor(user string) []aclRule {
	if user == "" {
		return a.anonymous
	}
	return a.users[user]
}

// fill is what filling in a pattern's %c and %u for one client gives.
type fill uint8

const (
	filled  fill = iota
	absent       // no user name (anonymous) or no client ID: the rule is not about this client
	hostile      // a value that is not one plain topic level: fail closed
)

// fillable reports whether v may stand for %c or %u. It must be one whole
// topic level, so it may not contain '/', '+', '#' or NUL, and it may not
// start with '$' (a pattern %c/# must not give a client named $SYS the
// broker's own topics).
func fillable(v string) fill {
	switch {
	case v == "":
		return absent
	case v[0] == '$' || strings.ContainsAny(v, "/+#\x00"):
		return hostile
	}
	return filled
}

// fill reports whether the rule's %c and %u can be filled in for a client.
func (r *aclRule) fill(user, clientID string) fill {
	if !r.subst {
		return filled
	}
	res := filled
	for i := range r.levels {
		var f fill
		switch r.levels[i].kind {
		case clientLevel:
			f = fillable(clientID)
		case userLevel:
			f = fillable(user)
		default:
			continue
		}
		res = max(res, f)
	}
	return res
}

// value returns a non-wildcard level's text with %c or %u filled in; call it
// only after fill returned filled.
func (l *aclLevel) value(user, clientID string) string {
	switch l.kind {
	case clientLevel:
		return clientID
	case userLevel:
		return user
	}
	return l.text
}

// matchTopic reports whether the rule's filter, with %c and %u filled in,
// matches topic. Call it only after fill returned filled.
func (r *aclRule) matchTopic(topic, user, clientID string) bool {
	dollar := strings.HasPrefix(topic, "$")
	pos := 0 // start of the current topic level; len(topic)+1 once consumed
	for i := range r.levels {
		l := &r.levels[i]
		if l.kind == hashLevel {
			// '#' also matches the parent level; neither wildcard matches
			// a first level starting with '$' (MQTT 4.7.2).
			return !(i == 0 && dollar)
		}
		if pos > len(topic) {
			return false
		}
		end := levelEnd(topic, pos)
		level := topic[pos:end]
		switch l.kind {
		case plusLevel:
			if i == 0 && dollar {
				return false
			}
		default:
			if l.value(user, clientID) != level {
				return false
			}
		}
		pos = end + 1
	}
	return pos > len(topic)
}

// resolve returns the rule's filter levels with %c and %u filled in. Call it
// only after fill returned filled.
func (r *aclRule) resolve(user, clientID string) []string {
	out := make([]string, len(r.levels))
	for i := range r.levels {
		l := &r.levels[i]
		switch l.kind {
		case plusLevel:
			out[i] = "+"
		case hashLevel:
			out[i] = "#"
		default:
			out[i] = l.value(user, clientID)
		}
	}
	return out
}

func levelEnd(s string, i int) int {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return i + j
	}
	return len(s)
}

func wild(level string) bool { return level == "+" || level == "#" }

// covers reports whether every topic that filter f matches is also matched
// by rule filter r.
func covers(r, f []string) bool {
	for i := 0; ; i++ {
		if i == len(r) {
			return i == len(f)
		}
		if r[i] == "#" {
			// At the first level, r's '#' misses $ topics; f's wildcards miss
			// them too, but a literal $SYS is not covered.
			return i > 0 || wild(f[0]) || !strings.HasPrefix(f[0], "$")
		}
		if i == len(f) {
			return false
		}
		switch {
		case r[i] == "+":
			if f[i] == "#" || (i == 0 && !wild(f[0]) && strings.HasPrefix(f[0], "$")) {
				return false
			}
		case r[i] != f[i]:
			return false
		}
	}
}

// intersects reports whether some topic is matched by both filters.
func intersects(d, f []string) bool {
	for i := 0; ; i++ {
		switch {
		case i == len(d) && i == len(f):
			return true
		case i == len(d):
			return f[i] == "#" // f's '#' matches the parent level
		case i == len(f):
			return d[i] == "#"
		}
		x, y := d[i], f[i]
		if i == 0 {
			// Wildcards at the first level miss topics starting with '$'.
			if wild(x) && !wild(y) && strings.HasPrefix(y, "$") ||
				wild(y) && !wild(x) && strings.HasPrefix(x, "$") {
				return false
			}
		}
		switch {
		case x == "#" || y == "#":
			return true
		case x == "+" || y == "+":
		case x != y:
			return false
		}
	}
}
