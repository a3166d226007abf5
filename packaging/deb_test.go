package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// buildDeb runs packaging/release for amd64 into a new directory and returns
// the .deb's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	deb, err := buildDebInto(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return deb
}

func buildDebInto(out string) (string, error) {
	cmd := exec.Command("./release", "-o", out, "--debs-only", "amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("packaging/release: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "gatewayd_*_amd64.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("want one .deb in %s, got %q", out, debs)
	}
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil || !strings.Contains(string(sums), "  "+filepath.Base(debs[0])+"\n") {
		return "", fmt.Errorf("SHA256SUMS does not list the .deb (%v):\n%s", err, sums)
	}
	return debs[0], nil
}

// The tests that only look at the .deb or install it share one build.
var shared struct {
	once sync.Once
	dir  string
	deb  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// sharedDeb is the .deb built once for this test run.
func sharedDeb(t *testing.T) string {
	t.Helper()
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "gatewayd-deb-"); shared.err == nil {
			shared.deb, shared.err = buildDebInto(shared.dir)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.deb
}

func needTools(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds release binaries and a .deb: not in -short")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not installed (apt-get install dpkg)")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed: the version comes from git")
	}
}

func TestDebIsReproducible(t *testing.T) {
	needTools(t)
	a, b := sharedDeb(t), buildDeb(t)
	if filepath.Base(a) != filepath.Base(b) {
		t.Fatalf("names differ: %s, %s", a, b)
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Errorf("two builds of one commit differ: %s and %s", a, b)
	}
}

func TestDebContentsPermissionsConffilesAndScripts(t *testing.T) {
	needTools(t)
	deb := sharedDeb(t)
	root, control := t.TempDir(), t.TempDir()
	for _, args := range [][]string{{"-x", deb, root}, {"-e", deb, control}} {
		if out, err := exec.Command("dpkg-deb", args...).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb %s: %v\n%s", args[0], err, out)
		}
	}

	files := map[string]os.FileMode{
		"usr/bin/gatewayd":                    0o755,
		"usr/bin/gatewayctl":                  0o755,
		"lib/systemd/system/gatewayd.service": 0o644,
		"usr/lib/sysusers.d/gatewayd.conf":    0o644,
		"usr/lib/tmpfiles.d/gatewayd.conf":    0o644,
		"etc/gatewayd/gatewayd.yaml":          0o644,
		"usr/share/doc/gatewayd/README.md":    0o644,
	}
	for path, mode := range files {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	for _, pair := range [][2]string{
		{"lib/systemd/system/gatewayd.service", "../systemd/gatewayd.service"},
		{"usr/lib/sysusers.d/gatewayd.conf", "../systemd/gatewayd.sysusers"},
		{"usr/lib/tmpfiles.d/gatewayd.conf", "../systemd/gatewayd.tmpfiles"},
		{"etc/gatewayd/gatewayd.yaml", "gatewayd.yaml"},
	} {
		got, _ := os.ReadFile(filepath.Join(root, pair[0]))
		want, _ := os.ReadFile(pair[1])
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not %s", pair[0], pair[1])
		}
	}

	// A static binary of the release's version.
	out, err := exec.Command(filepath.Join(root, "usr/bin/gatewayd"), "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "gatewayd ") || strings.Contains(string(out), " dev ") {
		t.Errorf("gatewayd --version: %v: %s", err, out)
	}
	if out, _ := exec.Command("file", filepath.Join(root, "usr/bin/gatewayd")).CombinedOutput(); len(out) > 0 && !strings.Contains(string(out), "statically linked") {
		t.Errorf("not static: %s", out)
	}

	conffiles, _ := os.ReadFile(filepath.Join(control, "conffiles"))
	if strings.TrimSpace(string(conffiles)) != "/etc/gatewayd/gatewayd.yaml" {
		t.Errorf("conffiles:\n%s", conffiles)
	}
	ctl, _ := os.ReadFile(filepath.Join(control, "control"))
	for _, want := range []string{"Package: gatewayd\n", "Architecture: amd64\n", "Version: "} {
		if !strings.Contains(string(ctl), want) {
			t.Errorf("control has no %q:\n%s", want, ctl)
		}
	}

	// What the maintainer scripts do is checked by running them with dpkg
	// (dpkg_test.go); here only that they are there, executable and parse.
	for _, name := range []string{"postinst", "prerm", "postrm"} {
		path := filepath.Join(control, name)
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v", name, fi.Mode().Perm())
		}
		if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", name, err, out)
		}
	}
}
