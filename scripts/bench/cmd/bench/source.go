package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// snapshot copies gatewayd's sources into dst so that both of its builds
// (amd64 to run, arm to weigh) come from one consistent tree, whatever else
// changes in the working tree meanwhile. With rev "" it copies the working
// tree (tracked and untracked files, not ignored ones); otherwise the
// committed tree of rev. It returns a description of what was copied.
func snapshot(ctx context.Context, repo, rev, dst string) (string, error) {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	short := output(repo, "git", "rev-parse", "--short", "HEAD")
	if rev != "" {
		cmd := exec.CommandContext(ctx, "git", "archive", "--format=tar", rev)
		cmd.Dir = repo
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git archive %s: %v: %s", rev, err, oneLine(stderr.String()))
		}
		if err := untar(bytes.NewReader(out), dst); err != nil {
			return "", err
		}
		return "commit " + output(repo, "git", "rev-parse", "--short", rev), nil
	}
	cmd := exec.CommandContext(ctx, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = repo
	list, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git ls-files: %w", err)
	}
	for _, name := range strings.Split(string(list), "\x00") {
		if name == "" || strings.HasPrefix(name, "scripts/bench/") {
			continue
		}
		if err := copyFile(filepath.Join(repo, name), filepath.Join(dst, name)); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // deleted in the working tree
			}
			return "", err
		}
	}
	desc := "working tree at commit " + short
	if output(repo, "git", "status", "--porcelain", "--", ".", ":!scripts/bench", ":!docs") != "" {
		desc += " with uncommitted changes"
	}
	return desc, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			return fmt.Errorf("archive entry %q escapes the snapshot", h.Name)
		}
		path := filepath.Join(dst, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode).Perm()|0o200)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
}

// liftedLimits are gatewayd's broker keys that refuse benchmark traffic by
// default (connection count and rate, subscriptions per client); they are
// set to 0, no limit, when the source being measured has them, as the
// peers' limits are raised.
var liftedLimits = []string{"max_connections", "max_connections_per_second_per_address", "max_subscriptions_per_client"}

// limitKeys returns the lifted limits that src's broker config knows.
func limitKeys(src string) []string {
	b, err := os.ReadFile(filepath.Join(src, "broker", "config.go"))
	if err != nil {
		return nil
	}
	var keys []string
	for _, k := range liftedLimits {
		if bytes.Contains(b, []byte(`yaml:"`+k+`"`)) {
			keys = append(keys, k)
		}
	}
	return keys
}

// gatewaydConfig is the configuration gatewayd runs with.
func gatewaydConfig(data, addr string, keys []string) string {
	var listener, broker strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&broker, "  %s: 0\n", k)
		if k == "max_connections_per_second_per_address" {
			// A loopback listener obeys only its own setting.
			fmt.Fprintf(&listener, "      %s: 0\n", k)
		}
	}
	return fmt.Sprintf(`gateway_id: bench
data_dir: %s
broker:
  listeners:
    - address: %s
%s  max_queued_messages: 1000000
  max_queued_bytes: 1073741824
%s`, data, addr, listener.String(), broker.String())
}
