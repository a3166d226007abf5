package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"unicode/utf8"
)

// PasswordFile is a loaded password file. It is immutable and safe for
// concurrent use; to pick up changes, load the file again and swap.
type PasswordFile struct {
	users map[string]verifier
	// dummy is checked for unknown users. It is the file's most common kind
	// of entry, so a wrong user name costs as much as a wrong password.
	dummy verifier
	// slots bounds concurrent checks. Each argon2id check holds 19 MiB, so a
	// reconnect storm of 200 clients would otherwise ask a 1 GiB board for
	// 3.8 GiB at once; more checks than CPUs finish no sooner anyway.
	slots chan struct{}
}

// pwLine is one line of a password file as read: a comment or blank line
// (user == "") or an entry.
type pwLine struct {
	raw  string
	user string
	v    verifier
}

// LoadPasswordFile reads a password file: one user:hash entry a line, with
// blank lines and lines starting with '#' ignored. Errors name the file and
// line. See the package documentation for the hash formats.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: password file: %w", err)
	}
	lines, err := parsePasswd(path, string(data))
	if err != nil {
		return nil, err
	}
	p := &PasswordFile{
		users: make(map[string]verifier, len(lines)),
		slots: make(chan struct{}, runtime.GOMAXPROCS(0)),
	}
	count := make(map[string]int)
	best := 0
	for _, l := range lines {
		if l.user == "" {
			continue
		}
		p.users[l.user] = l.v
		c := l.v.cost()
		count[c]++
		if count[c] > best {
			best, p.dummy = count[c], l.v
		}
	}
	if p.dummy == nil {
		// An empty file: any name is unknown, so the time is the same for all.
		h, err := HashPassword([]byte("dummy"))
		if err != nil {
			return nil, err
		}
		p.dummy, _ = parseArgon2id(h)
	}
	return p, nil
}

// Check reports whether password is user's password. An unknown user is
// checked against a dummy entry so that it takes as long as a wrong password.
// At most GOMAXPROCS checks run at once; others wait their turn.
func (p *PasswordFile) Check(user string, password []byte) bool {
	ok, _ := p.CheckContext(context.Background(), user, password)
	return ok
}

// CheckContext is Check that gives up waiting for a free slot when ctx is
// done, for example when the client has gone away.
func (p *PasswordFile) CheckContext(ctx context.Context, user string, password []byte) (bool, error) {
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-p.slots }()
	v, known := p.users[user]
	if !known {
		v = p.dummy
	}
	ok := v.verify(password)
	return ok && known, nil
}

// Users returns the user names in the file, sorted.
func (p *PasswordFile) Users() []string {
	names := make([]string, 0, len(p.users))
	for u := range p.users {
		names = append(names, u)
	}
	sort.Strings(names)
	return names
}

// parsePasswd splits a password file into lines and parses each entry.
func parsePasswd(path, data string) ([]pwLine, error) {
	raw := strings.Split(data, "\n")
	if raw[len(raw)-1] == "" {
		raw = raw[:len(raw)-1]
	}
	lines := make([]pwLine, 0, len(raw))
	seen := make(map[string]int)
	var errs []error
	for i, r := range raw {
		n := i + 1
		l := pwLine{raw: r}
		text := strings.TrimRight(r, " \t\r")
		if t := strings.TrimLeft(text, " \t"); t == "" || t[0] == '#' {
			lines = append(lines, l)
			continue
		}
		user, hash, ok := strings.Cut(text, ":")
		var err error
		switch {
		case !ok:
			err = errors.New("want user:hash")
		case user == "":
			err = errors.New("empty user name")
		case !utf8.ValidString(user):
			err = errors.New("user name is not valid UTF-8")
		case seen[user] != 0:
			err = fmt.Errorf("user %q already has an entry on line %d", user, seen[user])
		default:
			l.user = user
			l.v, err = parseHash(hash)
			seen[user] = n
		}
		if err != nil {
			errs = append(errs, &LineError{Path: path, Line: n, Err: err})
			continue
		}
		lines = append(lines, l)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return lines, nil
}

// validUser reports why name cannot be written to a password file, or nil.
func validUser(name string) error {
	switch {
	case name == "":
		return errors.New("auth: empty user name")
	case strings.ContainsAny(name, ":\n\r\x00"):
		return fmt.Errorf("auth: user name %q contains ':', a line break or NUL", name)
	case name[0] == '#':
		return fmt.Errorf("auth: user name %q starts with '#' and would read as a comment", name)
	case strings.TrimSpace(name) != name:
		return fmt.Errorf("auth: user name %q starts or ends with white space", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("auth: user name %q is not valid UTF-8", name)
	}
	return nil
}
