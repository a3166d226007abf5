package auth

import (
	"context"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// mosquittoPasswd runs the real mosquitto_passwd with args.
func mosquittoPasswd(t *testing.T, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("mosquitto_passwd"); err != nil {
		t.Skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
	}
	out, err := exec.Command("mosquitto_passwd", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_passwd %v: %v\n%s", args, err, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func load(t *testing.T, path string) *PasswordFile {
	t.Helper()
	p, err := LoadPasswordFile(path)
	if err != nil {
		t.Fatalf("LoadPasswordFile: %v", err)
	}
	return p
}

type check struct {
	user, password string
	want           bool
}

func expectChecks(t *testing.T, p *PasswordFile, checks []check) {
	t.Helper()
	for _, c := range checks {
		if got := p.Check(c.user, []byte(c.password)); got != c.want {
			t.Errorf("Check(%q, %q) = %v, want %v", c.user, c.password, got, c.want)
		}
	}
}

func TestMosquittoPBKDF2EntriesVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "s3cret")
	mosquittoPasswd(t, "-b", path, "bob", "pässwörd with spaces:and colon")
	if data := readFile(t, path); strings.Count(data, ":$7$") != 2 {
		t.Fatalf("mosquitto_passwd did not write $7$ entries:\n%s", data)
	}
	p := load(t, path)
	expectChecks(t, p, []check{
		{"alice", "s3cret", true},
		{"alice", "s3cret ", false},
		{"alice", "", false},
		{"bob", "pässwörd with spaces:and colon", true},
		{"bob", "s3cret", false},
		{"carol", "s3cret", false},
		{"", "", false},
	})
	if got := p.dummy.cost(); !strings.HasPrefix(got, "pbkdf2-sha512 ") {
		t.Errorf("unknown users are checked against %q, want the file's own $7$ kind", got)
	}
}

func TestMosquittoSHA512EntriesVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	mosquittoPasswd(t, "-c", "-H", "sha512", "-b", path, "old", "legacy")
	if data := readFile(t, path); !strings.HasPrefix(data, "old:$6$") {
		t.Fatalf("mosquitto_passwd -H sha512 did not write a $6$ entry:\n%s", data)
	}
	expectChecks(t, load(t, path), []check{
		{"old", "legacy", true},
		{"old", "Legacy", false},
	})
}

func TestHandBuiltSHA512EntryVerifies(t *testing.T) {
	salt := []byte("0123456789ab")
	sum := sha512.Sum512(append([]byte("hunter2"), salt...))
	entry := "dave:$6$" + base64.StdEncoding.EncodeToString(salt) + "$" + base64.StdEncoding.EncodeToString(sum[:])
	path := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, path, entry+"\n")
	expectChecks(t, load(t, path), []check{
		{"dave", "hunter2", true},
		{"dave", "hunter3", false},
		{"dave", "", false},
	})
}

func TestSetPasswordWritesArgon2idThatVerifies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	if err := SetPassword(path, "alice", []byte("first")); err != nil {
		t.Fatal(err)
	}
	data := readFile(t, path)
	if !strings.HasPrefix(data, "alice:$argon2id$v=19$m=19456,t=2,p=1$") || !strings.HasSuffix(data, "\n") {
		t.Fatalf("file = %q, want one argon2id entry with the default parameters", data)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %v, %v; want 0600", fi.Mode(), err)
	}
	expectChecks(t, load(t, path), []check{
		{"alice", "first", true},
		{"alice", "second", false},
		{"bob", "first", false},
	})

	if err := SetPassword(path, "alice", []byte("second")); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(readFile(t, path), "\n"); n != 1 {
		t.Fatalf("changing a password left %d lines, want 1", n)
	}
	expectChecks(t, load(t, path), []check{
		{"alice", "first", false},
		{"alice", "second", true},
	})
}

func TestHashPasswordSaltsEachHash(t *testing.T) {
	a, err := HashPassword([]byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := HashPassword([]byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatalf("two hashes of the same password are equal: %s", a)
	}
	h, err := parseHash(a)
	if err != nil {
		t.Fatalf("parseHash(%q): %v", a, err)
	}
	if !h.verify([]byte("same")) || h.verify([]byte("Same")) {
		t.Fatal("HashPassword's hash does not verify its own password only")
	}
}

func TestRewriteKeepsCommentsAndOtherEntries(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "a")
	mosquittoPasswd(t, "-b", path, "bob", "b")
	lines := strings.Split(strings.TrimSuffix(readFile(t, path), "\n"), "\n")
	alice, bob := lines[0], lines[1]
	if !strings.HasPrefix(alice, "alice:") || !strings.HasPrefix(bob, "bob:") {
		t.Fatalf("unexpected mosquitto_passwd output %q", lines)
	}
	writeFile(t, path, "# gateway users\n"+alice+"\n\n  # the bridge\n"+bob+"\n")

	if err := SetPassword(path, "carol", []byte("c")); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(path, "alice", []byte("new")); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(readFile(t, path), "\n")
	want := []string{"# gateway users", "alice:$argon2id$", "", "  # the bridge", bob, "carol:$argon2id$", ""}
	if len(got) != len(want) {
		t.Fatalf("file has lines %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) || (want[i] == "" && got[i] != "") {
			t.Errorf("line %d = %q, want %q...", i+1, got[i], want[i])
		}
	}
	expectChecks(t, load(t, path), []check{
		{"alice", "a", false},
		{"alice", "new", true},
		{"bob", "b", true},
		{"carol", "c", true},
	})
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %v, want only passwd (no temporary files left)", entries)
	}
}

func TestRewriteFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	writeFile(t, real, "# kept\n")
	if err := SetPassword(link, "alice", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link was replaced: %v %v", fi.Mode(), err)
	}
	if data := readFile(t, real); !strings.HasPrefix(data, "# kept\nalice:$argon2id$") {
		t.Fatalf("target = %q", data)
	}
}

func TestDeleteUser(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "a")
	mosquittoPasswd(t, "-b", path, "bob", "b")
	before := readFile(t, path)
	writeFile(t, path, "# users\n"+before)

	if err := DeleteUser(path, "alice"); err != nil {
		t.Fatal(err)
	}
	p := load(t, path)
	if got := p.Users(); len(got) != 1 || got[0] != "bob" {
		t.Fatalf("Users() = %q after deleting alice, want [bob]", got)
	}
	expectChecks(t, p, []check{{"alice", "a", false}, {"bob", "b", true}})
	if data := readFile(t, path); !strings.HasPrefix(data, "# users\nbob:$7$") {
		t.Fatalf("file = %q, want the comment and bob's entry unchanged", data)
	}

	after := readFile(t, path)
	if err := DeleteUser(path, "alice"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("deleting a missing user: %v, want ErrUnknownUser", err)
	}
	if readFile(t, path) != after {
		t.Fatal("a failed delete changed the file")
	}
	if err := DeleteUser(filepath.Join(t.TempDir(), "none"), "alice"); err == nil {
		t.Fatal("deleting from a missing file succeeded")
	}
}

func TestRewriteRefusesMalformedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	const data = "alice:plaintext\n"
	writeFile(t, path, data)
	err := SetPassword(path, "bob", []byte("b"))
	if err == nil || !strings.Contains(err.Error(), path+":1:") {
		t.Fatalf("SetPassword on a malformed file: %v, want an error naming %s:1", err, path)
	}
	if readFile(t, path) != data {
		t.Fatal("a malformed file was rewritten")
	}
}

func TestSetPasswordRejectsUnwritableUserNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	for _, user := range []string{"", "a:b", "a\nb", "a\rb", "#admin", " alice", "alice ", "a\x00b", "\xff"} {
		if err := SetPassword(path, user, []byte("x")); err == nil {
			t.Errorf("SetPassword(%q) succeeded", user)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused SetPassword created the file: %v", err)
	}
}

func TestLoadPasswordFileErrorsNameFileAndLine(t *testing.T) {
	salt := base64.StdEncoding.EncodeToString([]byte("0123456789ab"))
	sum := sha512.Sum512([]byte("x"))
	good6 := "$6$" + salt + "$" + base64.StdEncoding.EncodeToString(sum[:])
	key := base64.RawStdEncoding.EncodeToString(make([]byte, 32))
	salt16 := base64.RawStdEncoding.EncodeToString(make([]byte, 16))
	tests := []struct {
		name, line, want string
	}{
		{"no colon", "alice", "want user:hash"},
		{"empty user", ":" + good6, "empty user name"},
		{"plain text", "alice:secret", "not hashed"},
		{"unknown scheme", "alice:$2y$10$abc", "unsupported hash scheme $2y$"},
		{"argon2i", "alice:$argon2i$v=19$m=19456,t=2,p=1$" + salt16 + "$" + key, "unsupported hash scheme $argon2i$"},
		{"argon2id fields", "alice:$argon2id$v=19$" + salt16 + "$" + key, "argon2id hash: want"},
		{"argon2id version", "alice:$argon2id$v=16$m=19456,t=2,p=1$" + salt16 + "$" + key, "only v=19"},
		{"argon2id order", "alice:$argon2id$v=19$t=2,m=19456,p=1$" + salt16 + "$" + key, "want m=<KiB>"},
		{"argon2id huge memory", "alice:$argon2id$v=19$m=19456000,t=2,p=1$" + salt16 + "$" + key, "m=19456000"},
		{"argon2id zero time", "alice:$argon2id$v=19$m=19456,t=0,p=1$" + salt16 + "$" + key, "t=0"},
		{"argon2id short salt", "alice:$argon2id$v=19$m=19456,t=2,p=1$AAAA$" + key, "salt"},
		{"argon2id bad hash", "alice:$argon2id$v=19$m=19456,t=2,p=1$" + salt16 + "$!!!", "hash is not base64"},
		{"$7$ fields", "alice:$7$101$" + salt, "want $7$<iterations>"},
		{"$7$ iterations", "alice:$7$0$" + salt + "$" + key, "iterations"},
		{"$7$ salt", "alice:$7$101$%%%$" + key, "salt is not base64"},
		{"$6$ length", "alice:$6$" + salt + "$" + key, "64 bytes"},
		{"$6$ fields", "alice:$6$" + salt, "want $6$<salt>$<hash>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "passwd")
			writeFile(t, path, "# header\nok:"+good6+"\n"+tt.line+"\n")
			_, err := LoadPasswordFile(path)
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

func TestLoadPasswordFileReportsEveryBadLineAndDuplicates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	salt := base64.StdEncoding.EncodeToString([]byte("0123456789ab"))
	sum := sha512.Sum512([]byte("x"))
	good6 := "$6$" + salt + "$" + base64.StdEncoding.EncodeToString(sum[:])
	writeFile(t, path, "alice:"+good6+"\r\nbad\nalice:"+good6+"\n")
	_, err := LoadPasswordFile(path)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{path + ":2: want user:hash", path + `:3: user "alice" already has an entry on line 1`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if _, err := LoadPasswordFile(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}

func TestEmptyPasswordFileRefusesEveryone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, path, "# nobody yet\n")
	p := load(t, path)
	expectChecks(t, p, []check{{"alice", "", false}, {"", "", false}})
	if got := p.dummy.cost(); !strings.HasPrefix(got, "argon2id m=19456,t=2,p=1") {
		t.Errorf("dummy = %q, want the default argon2id", got)
	}
}

func TestCheckContextGivesUpWhenAllSlotsAreBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "a")
	p := load(t, path)
	for range cap(p.slots) {
		p.slots <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := p.CheckContext(ctx, "alice", []byte("a")); ok || !errors.Is(err, context.Canceled) {
		t.Fatalf("CheckContext with every slot busy and ctx done = %v, %v; want false, context.Canceled", ok, err)
	}
	<-p.slots
	if ok, err := p.CheckContext(context.Background(), "alice", []byte("a")); !ok || err != nil {
		t.Fatalf("CheckContext with a free slot = %v, %v", ok, err)
	}
}

func TestConcurrentChecks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	mosquittoPasswd(t, "-c", "-b", path, "alice", "a")
	mosquittoPasswd(t, "-b", path, "bob", "b")
	p := load(t, path)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			user, pw := "alice", "a"
			if i%2 == 1 {
				user, pw = "bob", "b"
			}
			if !p.Check(user, []byte(pw)) || p.Check(user, []byte("wrong")) {
				t.Errorf("goroutine %d: wrong result for %s", i, user)
			}
		})
	}
	wg.Wait()
}

func BenchmarkCheckArgon2id(b *testing.B) {
	path := filepath.Join(b.TempDir(), "passwd")
	if err := SetPassword(path, "alice", []byte("correct horse")); err != nil {
		b.Fatal(err)
	}
	p, err := LoadPasswordFile(path)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !p.Check("alice", []byte("correct horse")) {
			b.Fatal("check failed")
		}
	}
}

func BenchmarkCheckMosquittoPBKDF2(b *testing.B) {
	if _, err := exec.LookPath("mosquitto_passwd"); err != nil {
		b.Skip("mosquitto_passwd is not installed")
	}
	path := filepath.Join(b.TempDir(), "passwd")
	if out, err := exec.Command("mosquitto_passwd", "-c", "-b", path, "alice", "correct horse").CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	p, err := LoadPasswordFile(path)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !p.Check("alice", []byte("correct horse")) {
			b.Fatal("check failed")
		}
	}
}
