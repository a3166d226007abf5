package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/term"

	"gatewayd/broker/auth"
)

const passwdUsage = `Usage:
  gatewayctl passwd [-c] [--stdin] FILE USER   add USER or change their password
  gatewayctl passwd -D FILE USER                delete USER

FILE is the broker's password_file. The password is asked twice without echo
when stdin is a terminal; with --stdin it is the first line of stdin. New
entries are argon2id hashes (Mosquitto's own clients cannot check them, the
broker can). The file is replaced atomically, with mode 0600.

  -c       create FILE if it does not exist (without -c it must exist)
  -D       delete USER from FILE
  --stdin  read the password from the first line of stdin

Exit status: 0 done, 1 failed (file unreadable or malformed, unknown user,
passwords differ), 2 bad usage.
`

// runPasswd is "gatewayctl passwd": it edits a password file with package
// auth, so what it writes is what the broker reads.
func runPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("passwd", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(stderr, passwdUsage) }
	create := flags.Bool("c", false, "create the file if it does not exist")
	del := flags.Bool("D", false, "delete the user")
	fromStdin := flags.Bool("stdin", false, "read the password from stdin")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if flags.NArg() != 2 {
		fmt.Fprint(stderr, passwdUsage)
		return exitUsage
	}
	path, user := flags.Arg(0), flags.Arg(1)
	if *del && (*create || *fromStdin) {
		fmt.Fprintln(stderr, "gatewayctl passwd: -D takes no -c or --stdin")
		return exitUsage
	}
	if *del {
		if err := auth.DeleteUser(path, user); err != nil {
			fmt.Fprintf(stderr, "gatewayctl passwd: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	if !*create {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "gatewayctl passwd: %s does not exist (use -c to create it)\n", path)
			return exitFailed
		}
	}
	password, err := readPassword(stdin, stderr, *fromStdin)
	if err != nil {
		fmt.Fprintf(stderr, "gatewayctl passwd: %v\n", err)
		if errors.Is(err, errNotTerminal) {
			return exitUsage
		}
		return exitFailed
	}
	defer clear(password)
	if err := auth.SetPassword(path, user, password); err != nil {
		fmt.Fprintf(stderr, "gatewayctl passwd: %v\n", err)
		return exitFailed
	}
	return exitOK
}

var errNotTerminal = errors.New("stdin is not a terminal: give the password on stdin with --stdin")

// readPassword reads the password: the first line of stdin with --stdin,
// otherwise twice from the terminal without echo.
func readPassword(stdin io.Reader, stderr io.Writer, fromStdin bool) ([]byte, error) {
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadBytes('\n')
		if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("no password on stdin")
			}
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			return nil, errors.New("empty password")
		}
		return line, nil
	}
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, errNotTerminal
	}
	fmt.Fprint(stderr, "Password: ")
	p1, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	if err != nil {
		return nil, fmt.Errorf("reading the password: %w", err)
	}
	fmt.Fprint(stderr, "Reenter password: ")
	p2, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(stderr)
	defer clear(p2)
	if err != nil {
		clear(p1)
		return nil, fmt.Errorf("reading the password: %w", err)
	}
	if !bytes.Equal(p1, p2) {
		clear(p1)
		return nil, errors.New("passwords do not match")
	}
	if len(p1) == 0 {
		return nil, errors.New("empty password")
	}
	return p1, nil
}
