package auth

import (
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func loadACL(t *testing.T, data string) *ACL {
	t.Helper()
	path := filepath.Join(t.TempDir(), "acl")
	writeFile(t, path, data)
	a, err := LoadACLFile(path)
	if err != nil {
		t.Fatalf("LoadACLFile: %v", err)
	}
	return a
}

type access struct {
	user, client, topic string
	access              Access
	want                bool
}

func expectAccess(t *testing.T, a *ACL, cases []access) {
	t.Helper()
	for _, c := range cases {
		if got := a.Allowed(c.user, c.client, c.topic, c.access); got != c.want {
			t.Errorf("Allowed(user %q, client %q, %q, %v) = %v, want %v", c.user, c.client, c.topic, c.access, got, c.want)
		}
	}
}

type subscribe struct {
	user, client, filter string
	want                 bool
}

func expectSubscribe(t *testing.T, a *ACL, cases []subscribe) {
	t.Helper()
	for _, c := range cases {
		if got := a.CanSubscribe(c.user, c.client, c.filter); got != c.want {
			t.Errorf("CanSubscribe(user %q, client %q, %q) = %v, want %v", c.user, c.client, c.filter, got, c.want)
		}
	}
}

func TestACLUserSectionsAndAccessWords(t *testing.T) {
	a := loadACL(t, `# site ACL
user alice
topic read sensors/#
topic write actuators/+/set
topic readwrite chat
topic   plain/default

user bob
	topic write sensors/bob/temp
user alice
topic read extra
`)
	expectAccess(t, a, []access{
		{"alice", "c1", "sensors/kitchen/temp", Read, true},
		{"alice", "c1", "sensors", Read, true}, // '#' matches the parent level
		{"alice", "c1", "sensors/kitchen/temp", Write, false},
		{"alice", "c1", "actuators/valve/set", Write, true},
		{"alice", "c1", "actuators/valve/set", Read, false},
		{"alice", "c1", "actuators/valve/x/set", Write, false},
		{"alice", "c1", "chat", ReadWrite, true},
		{"alice", "c1", "chat/room", Read, false},
		{"alice", "c1", "plain/default", ReadWrite, true}, // no access word: readwrite
		{"alice", "c1", "extra", Read, true},              // a second section for alice adds to the first
		{"bob", "c2", "sensors/bob/temp", Write, true},
		{"bob", "c2", "sensors/bob/temp", Read, false},
		{"bob", "c2", "chat", Read, false},
		{"carol", "c3", "chat", Read, false}, // no section: nothing
		{"", "c4", "chat", Read, false},      // anonymous: only rules before the first user line
		{"alice", "c1", "sensors/+", Read, false},
		{"alice", "c1", "chat", Deny, false},
		{"alice", "c1", "chat", 0, false},
	})
}

func TestACLAnonymousRules(t *testing.T) {
	a := loadACL(t, `topic read public/#
topic write public/anon/in
user alice
topic read private/#
`)
	expectAccess(t, a, []access{
		{"", "anon", "public/news", Read, true},
		{"", "anon", "public/anon/in", Write, true},
		{"", "anon", "private/x", Read, false},
		{"alice", "c", "private/x", Read, true},
		{"alice", "c", "public/news", Read, false}, // anonymous rules are for anonymous clients only
	})
}

func TestACLPatternsFillClientIDAndUserName(t *testing.T) {
	a := loadACL(t, `pattern write devices/%c/status
pattern read users/%u/#
pattern readwrite %u/%c/inbox
user alice
topic read other
`)
	expectAccess(t, a, []access{
		{"alice", "pump-1", "devices/pump-1/status", Write, true},
		{"bob", "pump-2", "devices/pump-2/status", Write, true}, // patterns apply to users without a section
		{"alice", "pump-1", "devices/pump-2/status", Write, false},
		{"alice", "pump-1", "devices/%c/status", Write, false}, // no literal %c match
		{"alice", "pump-1", "users/alice/settings", Read, true},
		{"alice", "pump-1", "users/bob/settings", Read, false},
		{"alice", "pump-1", "alice/pump-1/inbox", ReadWrite, true},
		{"alice", "pump-1", "bob/pump-1/inbox", Read, false},
		{"", "anon-1", "devices/anon-1/status", Write, true}, // %c alone works for anonymous clients
		{"", "anon-1", "users//settings", Read, false},       // %u needs a user name
		{"", "anon-1", "/anon-1/inbox", Read, false},         // so does %u/%c
		{"alice", "", "devices//status", Write, false},       // and %c a client ID
	})
}

func TestACLTopicLinesDoNotSubstitute(t *testing.T) {
	a := loadACL(t, "user alice\ntopic read literal/%c\n")
	expectAccess(t, a, []access{
		{"alice", "c1", "literal/%c", Read, true},
		{"alice", "c1", "literal/c1", Read, false},
	})
}

func TestACLDenyWinsWhateverTheOrder(t *testing.T) {
	a := loadACL(t, `topic deny public/secret
topic read public/#
user alice
topic readwrite sensors/#
topic deny sensors/+/calibration
topic deny sensors/vault/#
pattern deny devices/%c/firmware
pattern readwrite devices/%c/#
`)
	expectAccess(t, a, []access{
		{"", "a", "public/secret", Read, false},
		{"", "a", "public/other", Read, true},
		{"alice", "c", "sensors/kitchen/temp", ReadWrite, true},
		{"alice", "c", "sensors/kitchen/calibration", Read, false},
		{"alice", "c", "sensors/kitchen/calibration", Write, false},
		{"alice", "c", "sensors/vault", Read, false}, // deny '#' covers its parent too
		{"alice", "c", "sensors/vault/key", Read, false},
		{"alice", "c", "devices/c/firmware", Write, false},
		{"alice", "c", "devices/c/state", Write, true},
		{"bob", "c", "devices/c/firmware", Write, false},
		{"bob", "d", "devices/c/firmware", Write, false}, // not d's device anyway
	})
}

func TestACLWildcardsDoNotMatchDollarTopics(t *testing.T) {
	a := loadACL(t, `topic read #
topic read +/status
topic read $SYS/broker/uptime
`)
	expectAccess(t, a, []access{
		{"", "c", "anything/at/all", Read, true},
		{"", "c", "$SYS/broker/load", Read, false},
		{"", "c", "$SYS/status", Read, false},
		{"", "c", "$SYS/broker/uptime", Read, true},
	})
	expectSubscribe(t, a, []subscribe{
		{"", "c", "#", true},
		{"", "c", "+/x", true},
		{"", "c", "$SYS/#", false},
		{"", "c", "$SYS/broker/uptime", true},
		{"", "c", "$SYS/broker/+", false},
	})
}

func TestACLSubscribeCoverage(t *testing.T) {
	a := loadACL(t, `user alice
topic read sensors/#
topic read rooms/+/temp
topic write cmd/#
topic readwrite chat/+
topic deny sensors/secret
topic deny sensors/vault/#
pattern read devices/%c/#
`)
	expectSubscribe(t, a, []subscribe{
		// covered by a read rule
		{"alice", "c", "sensors/kitchen/temp", true},
		{"alice", "c", "sensors/kitchen/+", true},
		{"alice", "c", "sensors/kitchen/#", true},
		{"alice", "c", "rooms/+/temp", true},
		{"alice", "c", "rooms/hall/temp", true},
		{"alice", "c", "chat/lobby", true},
		{"alice", "c", "$share/g/rooms/hall/temp", true}, // judged by the filter
		{"alice", "c", "devices/c/#", true},
		{"alice", "c", "devices/c", true},
		// wider than every read rule
		{"alice", "c", "#", false},
		{"alice", "c", "+/kitchen/temp", false},
		{"alice", "c", "rooms/#", false},
		{"alice", "c", "rooms/+/+", false},
		{"alice", "c", "rooms/hall/#", false},
		{"alice", "c", "chat/#", false},
		{"alice", "c", "cmd/#", false}, // write only
		{"alice", "c", "devices/+/#", false},
		{"alice", "c", "devices/d/#", false},
		// sharing any topic with a deny rule
		{"alice", "c", "sensors/#", false},
		{"alice", "c", "sensors/+", false},
		{"alice", "c", "sensors/secret", false},
		{"alice", "c", "sensors/vault", false},
		{"alice", "c", "sensors/vault/+/x", false},
		{"alice", "c", "sensors/+/#", false},
		{"alice", "c", "sensors/+/temp", false}, // sensors/vault/temp
		{"alice", "c", "$share/g/sensors/#", false},
		{"alice", "c", "sensors/secret/x", true}, // deny sensors/secret does not reach below it
		{"alice", "c", "sensors/public/#", true},
		// invalid filters
		{"alice", "c", "sensors/#/x", false},
		{"alice", "c", "sensors/a+", false},
		{"alice", "c", "", false},
		{"alice", "c", "$share/g", false},
		// no rules
		{"bob", "c", "sensors/kitchen/temp", false},
		{"", "c", "sensors/kitchen/temp", false},
	})
}

func TestACLHostileClientIDsAndUserNames(t *testing.T) {
	a := loadACL(t, `pattern readwrite devices/%c/#
pattern read users/%u/#
topic read public/#
user a/b
topic read own
`)
	expectAccess(t, a, []access{
		{"", "ok", "devices/ok/x", Write, true},
		{"", "a/#", "devices/a/x", Write, false},
		{"", "a/#", "devices/a/#", Write, false},
		{"", "+", "devices/x/y", Write, false},
		{"", "#", "devices/x", Write, false},
		{"", "a/b", "devices/a/b", Write, false},
		{"", "$SYS", "devices/$SYS/x", Write, false},
		{"", "a\x00", "devices/a\x00/x", Write, false},
		{"", "+", "public/news", Read, true}, // an allow pattern it cannot use costs nothing else
		{"+", "c", "users/x/y", Read, false},
		{"a/b", "c", "users/a/b/y", Read, false},
		{"a/b", "c", "own", Read, true}, // a section for an odd name still works
	})
	expectSubscribe(t, a, []subscribe{
		{"", "ok", "devices/ok/#", true},
		{"", "a/#", "devices/a/#", false},
		{"", "+", "devices/+/#", false},
		{"", "#", "devices/#", false},
		{"", "+", "public/#", true},
	})
}

func TestACLHostileClientIDsGetNothingFromDenyPatterns(t *testing.T) {
	// The deny pattern cannot be filled in for a/#, and might have been meant
	// to stop it: it fails closed and denies that client everything.
	a := loadACL(t, `topic read public/#
pattern deny public/%c/#
`)
	expectAccess(t, a, []access{
		{"", "ok", "public/news", Read, true},
		{"", "ok", "public/ok/x", Read, false},
		{"", "a/#", "public/news", Read, false},
		{"", "+", "public/news", Read, false},
		{"", "", "public/news", Read, true}, // no client ID: the pattern is not about this client
	})
	expectSubscribe(t, a, []subscribe{
		{"", "ok", "public/news", true},
		{"", "a/#", "public/news", false},
	})
}

func TestACLMalformedFilesNameFileAndLine(t *testing.T) {
	tests := []struct {
		name, line, want string
	}{
		{"unknown keyword", "topics read a", `unknown keyword "topics"`},
		{"user without name", "user", "missing user name"},
		{"topic without filter", "topic", "missing topic filter"},
		{"access without filter", "topic read", "missing topic filter"},
		{"bad hash", "topic read a/#/b", "not a valid topic filter"},
		{"bad plus", "topic read a/b+", "not a valid topic filter"},
		{"partial %c", "pattern read a/%c-x", "%c and %u must fill a whole topic level"},
		{"partial %u", "pattern write x%u/y", "%c and %u must fill a whole topic level"},
		{"shared", "topic read $share/g/a", "without $share/<group>/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "acl")
			writeFile(t, path, "# header\ntopic read ok\n"+tt.line+"\n")
			_, err := LoadACLFile(path)
			var le *LineError
			if !errors.As(err, &le) || le.Path != path || le.Line != 3 {
				t.Fatalf("error = %v, want a *LineError for %s:3", err, path)
			}
			if !strings.HasPrefix(err.Error(), path+":3: ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q, want %s:3: ...%s...", err, path, tt.want)
			}
		})
	}
}

func TestACLFileEdgeCases(t *testing.T) {
	// Topics may hold spaces and a literal '%'; CRLF line ends and
	// indentation are fine.
	a := loadACL(t, "topic read room 1/temp\r\n  # comment\r\n\ttopic\twrite\tnet/100%\r\npattern read x/%c\r\n")
	expectAccess(t, a, []access{
		{"", "c", "room 1/temp", Read, true},
		{"", "c", "net/100%", Write, true},
		{"", "c", "x/c", Read, true},
	})
	path := filepath.Join(t.TempDir(), "acl")
	writeFile(t, path, "bogus\ntopic read a/#/b\n")
	_, err := LoadACLFile(path)
	if err == nil || !strings.Contains(err.Error(), path+":1:") || !strings.Contains(err.Error(), path+":2:") {
		t.Fatalf("error = %v, want both bad lines reported", err)
	}
}

func TestACLConcurrentUse(t *testing.T) {
	a := loadACL(t, "pattern readwrite devices/%c/#\ntopic read public/#\n")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 200 {
				if !a.Allowed("", "c", "devices/c/x", Write) || a.Allowed("", "c", "devices/d/x", Write) ||
					!a.CanSubscribe("", "c", "public/#") {
					t.Errorf("goroutine %d: wrong answer", i)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestCoversAndIntersects(t *testing.T) {
	tests := []struct {
		rule, filter       string
		covers, intersects bool
	}{
		{"#", "#", true, true},
		{"#", "a/b", true, true},
		{"#", "$SYS/x", false, false},
		{"#", "+/x", true, true},
		{"+", "a", true, true},
		{"+", "a/b", false, false},
		{"+", "#", false, true},
		{"+", "+/#", false, true}, // both match "x"
		{"a/#", "a", true, true},
		{"a/#", "#", false, true},
		{"a/+/#", "a/#", false, true},
		{"a/b", "a/b", true, true},
		{"a/b", "a/c", false, false},
		{"a/b", "a/b/c", false, false},
		{"a/b/c", "a/b", false, false},
		{"a", "a/#", false, true},
		{"a/+", "a", false, false},
		{"a/+", "+/b", false, true},
		{"$SYS/#", "#", false, false},
		{"$SYS/#", "$SYS/x", true, true},
		{"+/x", "$SYS/x", false, false},
		{"a//b", "a/+/b", false, true},
		{"a/+/b", "a//b", true, true},
	}
	for _, tt := range tests {
		r, f := strings.Split(tt.rule, "/"), strings.Split(tt.filter, "/")
		if got := covers(r, f); got != tt.covers {
			t.Errorf("covers(%q, %q) = %v, want %v", tt.rule, tt.filter, got, tt.covers)
		}
		if got := intersects(r, f); got != tt.intersects {
			t.Errorf("intersects(%q, %q) = %v, want %v", tt.rule, tt.filter, got, tt.intersects)
		}
		if got := intersects(f, r); got != tt.intersects {
			t.Errorf("intersects(%q, %q) = %v, want %v (not symmetric)", tt.filter, tt.rule, got, tt.intersects)
		}
	}
}

func BenchmarkACLAllowed(b *testing.B) {
	path := filepath.Join(b.TempDir(), "acl")
	data := "topic read public/#\nuser alice\ntopic read sensors/#\ntopic deny sensors/secret\n" +
		"pattern readwrite devices/%c/#\npattern read users/%u/#\n"
	writeFile(b, path, data)
	a, err := LoadACLFile(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !a.Allowed("alice", "pump-1", "devices/pump-1/state/temp", Read) {
			b.Fatal("denied")
		}
	}
}
