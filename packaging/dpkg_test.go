package packaging

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The .deb installed, reinstalled, upgraded, removed and purged by the real
// dpkg, maintainer scripts included, into a throw-away root directory:
// dpkg --root=DIR --force-script-chrootless runs the scripts on this host
// with DPKG_ROOT=DIR, and the scripts must then work on DIR only (as when an
// image is built). There is no running systemd here, so the service is
// enabled (its symlink made) but not started.
//
// A script that ignored DPKG_ROOT would change this host (add users, make
// directories), so dpkg runs in a private mount namespace where /etc, /var,
// /usr and the like are overlays: whatever is written there lands in the
// overlays' upper layers, the host never sees it, and the test fails naming
// it.

// hostDirs are the host's directories dpkg sees through an overlay.
var hostDirs = []string{"etc", "var", "usr", "lib", "lib64", "opt", "srv", "root", "home"}

func needDpkg(t *testing.T) {
	t.Helper()
	needTools(t)
	if os.Geteuid() != 0 {
		t.Skip("installs the .deb with dpkg --root, which needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not installed")
	}
	if _, err := exec.LookPath("deb-systemd-helper"); err != nil {
		t.Skip("deb-systemd-helper not installed (init-system-helpers, essential on Debian)")
	}
	for _, d := range []string{"/etc", "/var", "/usr"} {
		if tmp, _ := filepath.Abs(os.TempDir()); tmp == d || strings.HasPrefix(tmp, d+"/") {
			t.Skipf("the temporary directory %s is under %s, which the test puts an overlay on (set TMPDIR)", tmp, d)
		}
	}
	g := newGuard(t)
	if out, err := g.command("true").CombinedOutput(); err != nil {
		t.Skipf("cannot make a private mount namespace with overlays to keep the host safe (unshare, mount -t overlay): %v\n%s", err, out)
	}
}

// guard is a set of overlays on the host's directories, upper layers kept.
type guard struct {
	t    *testing.T
	dir  string
	dirs []string // the hostDirs that are directories here
}

func newGuard(t *testing.T) *guard {
	g := &guard{t: t, dir: t.TempDir()}
	for _, d := range hostDirs {
		if fi, err := os.Lstat("/" + d); err == nil && fi.IsDir() {
			g.dirs = append(g.dirs, d)
			os.MkdirAll(filepath.Join(g.dir, d, "upper"), 0o755)
			os.MkdirAll(filepath.Join(g.dir, d, "work"), 0o755)
		}
	}
	return g
}

// command runs name with args in a private mount namespace with the overlays.
func (g *guard) command(name string, args ...string) *exec.Cmd {
	script := "set -e\n"
	for _, d := range g.dirs {
		script += fmt.Sprintf("mount -t overlay overlay -o lowerdir=/%s,upperdir=%s/%s/upper,workdir=%s/%s/work /%s\n", d, g.dir, d, g.dir, d, d)
	}
	script += `exec "$@"` + "\n"
	return exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", name}, args...)...)
}

// written lists what was written to the host's directories so far.
func (g *guard) written() []string {
	var out []string
	for _, d := range g.dirs {
		up := filepath.Join(g.dir, d, "upper")
		filepath.Walk(up, func(p string, fi os.FileInfo, err error) error {
			if err == nil && p != up {
				out = append(out, "/"+d+strings.TrimPrefix(p, up))
			}
			return nil
		})
	}
	return out
}

// newRoot makes an empty root with a dpkg database and Debian's initial
// users and groups (base-passwd's, as a fresh Debian system has them).
func newRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"var/lib/dpkg/status":    "",
		"var/lib/dpkg/available": "",
		"etc/passwd":             "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":              "root:x:0:\n",
	}
	for name, master := range map[string]string{"etc/passwd": "passwd.master", "etc/group": "group.master"} {
		if b, err := os.ReadFile("/usr/share/base-passwd/" + master); err == nil {
			files[name] = string(b)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// dpkg runs dpkg on root, behind the guard's overlays; path is the PATH its
// scripts see ("" for the test's own). It fails the test when dpkg fails or
// when anything was written to the host.
func dpkg(t *testing.T, g *guard, root, path string, args ...string) string {
	t.Helper()
	cmd := g.command("dpkg", append([]string{"--root=" + root, "--force-script-chrootless",
		"--log=" + filepath.Join(root, "var/log/dpkg.log")}, args...)...)
	if path != "" {
		cmd.Env = append(os.Environ(), "PATH="+path)
	}
	out, err := cmd.CombinedOutput() // no standard input: a question fails rather than waits
	if err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if w := g.written(); len(w) > 0 {
		t.Fatalf("dpkg %s wrote to the host, not to %s (kept from the host by an overlay): %q\n%s", strings.Join(args, " "), root, w, out)
	}
	return string(out)
}

// status is dpkg's status of gatewayd in root ("" when it knows nothing).
func status(t *testing.T, root string) string {
	t.Helper()
	out, _ := exec.Command("dpkg-query", "--root="+root, "-W", "-f=${Status}", "gatewayd").Output()
	return string(out)
}

// entry is the line of user or group name in root's /etc/passwd or /etc/group, split.
func entry(t *testing.T, root, file, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "etc", file))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Split(l, ":"); f[0] == name && len(f) >= 4 {
			return f
		}
	}
	return nil
}

// checkFile checks root/path's type and mode, and its owner (uid, gid).
func checkFile(t *testing.T, root, path string, mode os.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(root, path))
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if fi.Mode()&(os.ModeType|os.ModePerm) != mode {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Errorf("%s: owner %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, gid)
	}
}

const (
	conffile  = "etc/gatewayd/gatewayd.yaml"
	wantsLink = "etc/systemd/system/multi-user.target.wants/gatewayd.service"
	maskLink  = "etc/systemd/system/gatewayd.service"
)

// checkInstalled checks what an installed gatewayd is in root: its files,
// the user and groups the postinst made and what they own.
func checkInstalled(t *testing.T, root string) {
	t.Helper()
	if s := status(t, root); s != "install ok installed" {
		t.Fatalf("dpkg status %q, want install ok installed", s)
	}
	for path, mode := range map[string]os.FileMode{
		"usr/bin/gatewayd":                    0o755,
		"usr/bin/gatewayctl":                  0o755,
		"lib/systemd/system/gatewayd.service": 0o644,
		"usr/lib/sysusers.d/gatewayd.conf":    0o644,
		"usr/lib/tmpfiles.d/gatewayd.conf":    0o644,
		"usr/share/doc/gatewayd/README.md":    0o644,
	} {
		checkFile(t, root, path, mode, 0, 0)
	}

	user := entry(t, root, "passwd", "gatewayd")
	if user == nil {
		t.Fatal("no user gatewayd in the root's /etc/passwd")
	}
	if len(user) != 7 || user[5] != "/var/lib/gatewayd" || user[6] != "/usr/sbin/nologin" {
		t.Errorf("user gatewayd: %q, want home /var/lib/gatewayd and shell /usr/sbin/nologin", user)
	}
	group := entry(t, root, "group", "gatewayd")
	if group == nil {
		t.Fatal("no group gatewayd in the root's /etc/group")
	}
	if user[3] != group[2] {
		t.Errorf("user gatewayd's group is %s, not gatewayd's %s", user[3], group[2])
	}
	for _, g := range []string{"gpio", "i2c", "dialout"} {
		f := entry(t, root, "group", g)
		if f == nil || !strings.Contains(","+f[3]+",", ",gatewayd,") {
			t.Errorf("group %s: %q, want gatewayd a member", g, f)
		}
	}
	uid, _ := strconv.Atoi(user[2])
	gid, _ := strconv.Atoi(group[2])
	checkFile(t, root, "var/lib/gatewayd", os.ModeDir|0o700, uid, gid)
	checkFile(t, root, "etc/gatewayd", os.ModeDir|0o750, 0, gid)
	checkFile(t, root, conffile, 0o640, 0, gid)
}

func TestDpkgInstallUpgradeRemovePurgeInThrowAwayRoot(t *testing.T) {
	needDpkg(t)
	deb := sharedDeb(t)
	root, g := newRoot(t), newGuard(t)

	// Install: files, user, directories, conffile, enabled, not started.
	out := dpkg(t, g, root, "", "--install", deb)
	checkInstalled(t, root)
	cf, _ := exec.Command("dpkg-query", "--root="+root, "-W", "-f=${Conffiles}", "gatewayd").Output()
	if !strings.HasPrefix(strings.TrimSpace(string(cf)), "/etc/gatewayd/gatewayd.yaml ") {
		t.Errorf("dpkg's conffiles of gatewayd: %q", cf)
	}
	if got, err := os.Readlink(filepath.Join(root, wantsLink)); err != nil || got != "/lib/systemd/system/gatewayd.service" {
		t.Errorf("not enabled: %s -> %q (%v)\ndpkg:\n%s", wantsLink, got, err, out)
	}

	// The administrator edits the configuration, gatewayd keeps state; a
	// reinstall of the same package keeps both.
	edited, err := os.ReadFile(filepath.Join(root, conffile))
	if err != nil {
		t.Fatal(err)
	}
	edited = append(edited, "# edited on this gateway\n"...)
	if err := os.WriteFile(filepath.Join(root, conffile), edited, 0o640); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "var/lib/gatewayd/store")
	if err := os.WriteFile(data, []byte("queued messages"), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkg(t, g, root, "", "--install", deb)
	checkInstalled(t, root)
	if b, _ := os.ReadFile(filepath.Join(root, conffile)); !bytes.Equal(b, edited) {
		t.Errorf("a reinstall replaced the edited %s:\n%s", conffile, b)
	}

	// The administrator disables gatewayd; an upgrade (the same files at a
	// higher version) keeps it disabled and keeps the edit.
	disable := exec.Command("systemctl", "--root="+root, "disable", "gatewayd.service")
	if _, err := exec.LookPath("systemctl"); err != nil {
		disable = exec.Command("deb-systemd-helper", "disable", "gatewayd.service")
		disable.Env = append(os.Environ(), "DPKG_ROOT="+root)
	}
	if out, err := disable.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", disable, err, out)
	}
	if _, err := os.Lstat(filepath.Join(root, wantsLink)); err == nil {
		t.Fatalf("%s left %s", disable, wantsLink)
	}
	upgrade := bumpVersion(t, deb)
	dpkg(t, g, root, "", "--install", upgrade)
	checkInstalled(t, root)
	if b, _ := os.ReadFile(filepath.Join(root, conffile)); !bytes.Equal(b, edited) {
		t.Errorf("an upgrade replaced the edited %s:\n%s", conffile, b)
	}
	if _, err := os.Lstat(filepath.Join(root, wantsLink)); err == nil {
		t.Error("an upgrade enabled gatewayd again after the administrator disabled it")
	}

	// Remove: the programs go; state, configuration and the user stay.
	dpkg(t, g, root, "", "--remove", "gatewayd")
	if s := status(t, root); s != "deinstall ok config-files" {
		t.Errorf("after remove, dpkg status %q", s)
	}
	if _, err := os.Stat(filepath.Join(root, "usr/bin/gatewayd")); !os.IsNotExist(err) {
		t.Errorf("after remove, usr/bin/gatewayd: %v", err)
	}
	if b, err := os.ReadFile(data); err != nil || string(b) != "queued messages" {
		t.Errorf("remove lost the state: %q, %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, conffile)); !bytes.Equal(b, edited) {
		t.Errorf("remove changed %s:\n%s", conffile, b)
	}
	if entry(t, root, "passwd", "gatewayd") == nil {
		t.Error("remove deleted the user gatewayd, who still owns /var/lib/gatewayd")
	}

	// Purge: state, configuration and the unit's enablement state go.
	dpkg(t, g, root, "", "--purge", "gatewayd")
	if s := status(t, root); s != "" && !strings.HasPrefix(s, "unknown ok not-installed") && !strings.HasPrefix(s, "purge ok not-installed") {
		t.Errorf("after purge, dpkg status %q", s)
	}
	for _, p := range []string{"var/lib/gatewayd", "etc/gatewayd", wantsLink, maskLink,
		"var/lib/systemd/deb-systemd-helper-enabled/gatewayd.service.dsh-also",
		"var/lib/systemd/deb-systemd-helper-masked/gatewayd.service"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("after purge, %s: %v", p, err)
		}
	}
}

// After a remove the unit is masked, not disabled: a reinstall finds it
// enabled as before.
func TestDpkgReinstallAfterRemoveKeepsItEnabled(t *testing.T) {
	needDpkg(t)
	deb := sharedDeb(t)
	root, g := newRoot(t), newGuard(t)
	dpkg(t, g, root, "", "--install", deb)
	dpkg(t, g, root, "", "--remove", "gatewayd")
	if got, err := os.Readlink(filepath.Join(root, maskLink)); err != nil || got != "/dev/null" {
		t.Errorf("after remove, %s -> %q (%v), want the unit masked", maskLink, got, err)
	}
	dpkg(t, g, root, "", "--install", deb)
	checkInstalled(t, root)
	if _, err := os.Lstat(filepath.Join(root, maskLink)); !os.IsNotExist(err) {
		t.Errorf("after reinstall, the unit is still masked: %v", err)
	}
	if got, err := os.Readlink(filepath.Join(root, wantsLink)); err != nil || got != "/lib/systemd/system/gatewayd.service" {
		t.Errorf("after reinstall, not enabled: %q (%v)", got, err)
	}
}

// Without systemd-sysusers and systemd-tmpfiles (older systems) the postinst
// makes the same user, groups and directories with useradd, groupadd and
// install.
func TestDpkgInstallWithoutSystemdSysusersAndTmpfiles(t *testing.T) {
	needDpkg(t)
	deb := sharedDeb(t)
	for _, tool := range []string{"useradd", "groupadd", "usermod"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				t.Skipf("%s not installed (passwd)", tool)
			}
		}
	}
	// A PATH of every tool on this host but those two.
	bin := t.TempDir()
	for _, dir := range append(filepath.SplitList(os.Getenv("PATH")), "/usr/sbin", "/usr/bin", "/sbin", "/bin") {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			name := e.Name()
			if name == "systemd-sysusers" || name == "systemd-tmpfiles" {
				continue
			}
			if _, err := os.Lstat(filepath.Join(bin, name)); err == nil {
				continue
			}
			os.Symlink(filepath.Join(dir, name), filepath.Join(bin, name))
		}
	}
	root, g := newRoot(t), newGuard(t)
	dpkg(t, g, root, bin, "--install", deb)
	checkInstalled(t, root)
	dpkg(t, g, root, bin, "--purge", "gatewayd")
	for _, p := range []string{"var/lib/gatewayd", "etc/gatewayd"} {
		if _, err := os.Lstat(filepath.Join(root, p)); !os.IsNotExist(err) {
			t.Errorf("after purge, %s: %v", p, err)
		}
	}
}

// bumpVersion returns a copy of deb whose version is one step higher, with
// the same files and scripts: what an upgrade installs.
func bumpVersion(t *testing.T, deb string) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if out, err := exec.Command("dpkg-deb", "--raw-extract", deb, tree).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -R: %v\n%s", err, out)
	}
	ctl := filepath.Join(tree, "DEBIAN/control")
	b, err := os.ReadFile(ctl)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Version: "); ok {
			l = "Version: " + v + "+1"
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(ctl, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "upgrade.deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-Znone", "--build", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -b: %v\n%s", err, b)
	}
	return out
}
