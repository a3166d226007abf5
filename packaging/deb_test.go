package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buildDeb runs packaging/release for amd64 into a new directory and returns
// the .deb's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("./release", "-o", out, "--debs-only", "amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("packaging/release: %v\n%s", err, b)
	}
	debs, _ := filepath.Glob(filepath.Join(out, "gatewayd_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one .deb in %s, got %q", out, debs)
	}
	sums, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
	if err != nil || !strings.Contains(string(sums), "  "+filepath.Base(debs[0])+"\n") {
		t.Errorf("SHA256SUMS does not list the .deb (%v):\n%s", err, sums)
	}
	return debs[0]
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
	a, b := buildDeb(t), buildDeb(t)
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
	deb := buildDeb(t)
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

	scripts := map[string][]string{
		"postinst": {"systemd-sysusers gatewayd.conf", "systemd-tmpfiles --create gatewayd.conf",
			"systemctl enable gatewayd.service", "[ -d /run/systemd/system ]", "systemctl --no-block start gatewayd.service"},
		"prerm":  {"systemctl stop gatewayd.service"},
		"postrm": {`[ "$1" = purge ]`, "rm -rf /var/lib/gatewayd"},
	}
	for name, wants := range scripts {
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
		b, _ := os.ReadFile(path)
		for _, w := range wants {
			if !strings.Contains(string(b), w) {
				t.Errorf("%s does not contain %q", name, w)
			}
		}
	}
	// Data is kept on remove: only purge deletes /var/lib/gatewayd.
	postrm, _ := os.ReadFile(filepath.Join(control, "postrm"))
	if i, j := strings.Index(string(postrm), `"$1" = purge`), strings.Index(string(postrm), "rm -rf /var/lib/gatewayd"); i < 0 || j < i {
		t.Error("postrm removes /var/lib/gatewayd outside purge")
	}
}
