package main

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"gatewayd/broker/auth"
	"gatewayd/internal/testenv"
)

// gatewayctl passwd -c --stdin writes an entry the broker's loader accepts
// with that password and no other; a second run changes it; -D removes it.
func TestPasswdAddChangeDelete(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")

	if _, errOut, code := ctl(t, "s3cret\n", "passwd", "-c", "--stdin", file, "alice"); code != 0 {
		t.Fatalf("passwd -c --stdin: exit %d: %s", code, errOut)
	}
	if _, errOut, code := ctl(t, "b0b\n", "passwd", "--stdin", file, "bob"); code != 0 {
		t.Fatalf("passwd --stdin (second user): exit %d: %s", code, errOut)
	}
	pw, err := auth.LoadPasswordFile(file)
	if err != nil {
		t.Fatalf("auth.LoadPasswordFile: %v", err)
	}
	if !pw.Check("alice", []byte("s3cret")) || pw.Check("alice", []byte("wrong")) || !pw.Check("bob", []byte("b0b")) {
		t.Fatalf("the written file does not verify alice:s3cret and bob:b0b (and only those)")
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}

	if _, errOut, code := ctl(t, "n3w\n", "passwd", "--stdin", file, "alice"); code != 0 {
		t.Fatalf("changing alice's password: exit %d: %s", code, errOut)
	}
	pw, err = auth.LoadPasswordFile(file)
	if err != nil {
		t.Fatalf("auth.LoadPasswordFile after change: %v", err)
	}
	if !pw.Check("alice", []byte("n3w")) || pw.Check("alice", []byte("s3cret")) {
		t.Fatalf("alice's password was not changed")
	}

	if _, errOut, code := ctl(t, "", "passwd", "-D", file, "alice"); code != 0 {
		t.Fatalf("passwd -D: exit %d: %s", code, errOut)
	}
	pw, err = auth.LoadPasswordFile(file)
	if err != nil {
		t.Fatalf("auth.LoadPasswordFile after delete: %v", err)
	}
	if got := strings.Join(pw.Users(), ","); got != "bob" {
		t.Fatalf("users after deleting alice: %q, want bob", got)
	}
}

// Failures have their exit status: a missing file without -c, deleting an
// unknown user, an empty password and no password at all exit 1; bad
// arguments, and no --stdin when stdin is not a terminal, exit 2.
func TestPasswdExitStatus(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "passwd")
	if _, errOut, code := ctl(t, "x\n", "passwd", "-c", "--stdin", file, "alice"); code != 0 {
		t.Fatalf("setup: exit %d: %s", code, errOut)
	}
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  int
	}{
		{"missing file without -c", "x\n", []string{"passwd", "--stdin", filepath.Join(dir, "none"), "alice"}, 1},
		{"delete unknown user", "", []string{"passwd", "-D", file, "carol"}, 1},
		{"empty password", "\n", []string{"passwd", "--stdin", file, "alice"}, 1},
		{"nothing on stdin", "", []string{"passwd", "--stdin", file, "alice"}, 1},
		{"user name with a colon", "x\n", []string{"passwd", "--stdin", file, "a:b"}, 1},
		{"one argument", "", []string{"passwd", file}, 2},
		{"-D with --stdin", "", []string{"passwd", "-D", "--stdin", file, "alice"}, 2},
		{"stdin not a terminal", "x\n", []string{"passwd", file, "alice"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, errOut, code := ctl(t, tc.stdin, tc.args...)
			if code != tc.want {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.want, errOut)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "none")); err == nil {
		t.Fatalf("a file was created without -c")
	}
	pw, err := auth.LoadPasswordFile(file)
	if err != nil || !pw.Check("alice", []byte("x")) {
		t.Fatalf("the failed runs changed the file (%v)", err)
	}
}

// On a terminal, passwd asks twice without echo: the password typed never
// appears in what the terminal shows, and the entry verifies; two different
// answers change nothing and exit 1.
func TestPasswdPromptsWithoutEcho(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	run := func(first, second string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, "passwd", "-c", file, "alice")
		tty, term, err := pty.Open()
		if err != nil {
			t.Skipf("no pseudo-terminal: %v", err)
		}
		defer tty.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = term, term, term
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The prompt is printed just before echo is turned off: type only
		// once it is off, as a person would.
		echoOff := func() {
			t.Helper()
			deadline := time.Now().Add(testenv.Scale(10 * time.Second))
			for {
				tio, err := unix.IoctlGetTermios(int(term.Fd()), unix.TCGETS)
				if err != nil {
					t.Fatalf("reading the terminal's settings: %v", err)
				}
				if tio.Lflag&unix.ECHO == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("echo still on after the prompt")
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		var shown strings.Builder
		expect := func(prompt string) {
			t.Helper()
			buf := make([]byte, 256)
			for !strings.Contains(shown.String(), prompt) {
				tty.SetReadDeadline(time.Now().Add(testenv.Scale(10 * time.Second)))
				n, err := tty.Read(buf)
				shown.Write(buf[:n])
				if err != nil {
					t.Fatalf("waiting for %q: %v (terminal showed %q)", prompt, err, shown.String())
				}
			}
		}
		expect("Password: ")
		echoOff()
		io.WriteString(tty, first+"\n")
		expect("Reenter password: ")
		echoOff()
		io.WriteString(tty, second+"\n")
		cmd.Wait()
		term.Close()
		rest, _ := io.ReadAll(tty) // what is left, until EIO
		shown.Write(rest)
		return shown.String(), cmd.ProcessState.ExitCode()
	}

	shown, code := run("typed-s3cret", "typed-s3cret")
	if code != 0 {
		t.Fatalf("exit %d; terminal showed %q", code, shown)
	}
	if strings.Contains(shown, "typed-s3cret") {
		t.Fatalf("the password was echoed: %q", shown)
	}
	pw, err := auth.LoadPasswordFile(file)
	if err != nil || !pw.Check("alice", []byte("typed-s3cret")) {
		t.Fatalf("entry does not verify (%v)", err)
	}

	if shown, code := run("one", "two"); code != 1 || !strings.Contains(shown, "do not match") {
		t.Fatalf("different answers: exit %d, terminal %q; want 1 and a message", code, shown)
	}
	if pw, err := auth.LoadPasswordFile(file); err != nil || !pw.Check("alice", []byte("typed-s3cret")) {
		t.Fatalf("a failed run changed the entry (%v)", err)
	}
}
