package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// SetPassword sets user's password in the password file at path to an
// argon2id hash of password, adding the user if the file has no entry for
// them and creating the file if it does not exist. Every other line, comments
// included, is kept as it was. The file is replaced atomically (see
// DeleteUser); a malformed file is not rewritten.
func SetPassword(path, user string, password []byte) error {
	if err := validUser(user); err != nil {
		return err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return err
	}
	return rewritePasswd(path, true, func(lines []pwLine) ([]pwLine, error) {
		entry := pwLine{raw: user + ":" + hash, user: user}
		for i := range lines {
			if lines[i].user == user {
				lines[i] = entry
				return lines, nil
			}
		}
		return append(lines, entry), nil
	})
}

// DeleteUser removes user's entry from the password file at path. It returns
// an error wrapping ErrUnknownUser if there is none.
//
// Like SetPassword it writes a temporary file beside path with mode 0600 (and
// the old file's owner, so a root-run tool does not lock the daemon out),
// fsyncs it, renames it over path and fsyncs the directory: a crash leaves
// either the old file or the new one. Two writers at once may lose one
// update; run one at a time.
func DeleteUser(path, user string) error {
	return rewritePasswd(path, false, func(lines []pwLine) ([]pwLine, error) {
		for i := range lines {
			if lines[i].user == user {
				return append(lines[:i], lines[i+1:]...), nil
			}
		}
		return nil, fmt.Errorf("auth: %s: user %q: %w", path, user, ErrUnknownUser)
	})
}

func rewritePasswd(path string, create bool, edit func([]pwLine) ([]pwLine, error)) error {
	// Write through a symbolic link rather than replacing it.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		data, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("auth: password file: %w", err)
	}
	lines, err := parsePasswd(path, string(data))
	if err != nil {
		return err
	}
	if lines, err = edit(lines); err != nil {
		return err
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.raw)
		b.WriteByte('\n')
	}
	return writeFileAtomic(path, []byte(b.String()))
}

// writeFileAtomic replaces path with data, mode 0600, keeping the owner of
// the file it replaces.
func writeFileAtomic(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("auth: writing %s: %w", path, err)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if fi, serr := os.Stat(path); serr == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok &&
			(int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid()) {
			if err = f.Chown(int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
