package systemd

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// unitKeys reads gatewayd.service into section.key -> values.
func unitKeys(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open("gatewayd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, _ := strings.Cut(line, "=")
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	return keys
}

// systemd-analyze verify wants ExecStart's binary to exist, so it checks a
// copy of the unit that starts a gatewayd built here.
func TestUnitPassesSystemdAnalyzeVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (make verify-unit installs the systemd package)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "gatewayd")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	if out, err := exec.Command(goTool, "build", "-o", bin, "gatewayd/cmd/gatewayd").CombinedOutput(); err != nil {
		t.Fatalf("building gatewayd: %v\n%s", err, out)
	}
	unit, err := os.ReadFile("gatewayd.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/gatewayd ") {
		t.Fatal("gatewayd.service does not start /usr/bin/gatewayd")
	}
	copyPath := filepath.Join(dir, "gatewayd.service")
	if err := os.WriteFile(copyPath, []byte(strings.Replace(string(unit), "/usr/bin/gatewayd", bin, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", copyPath).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestUnitIsANotifyServiceWithWatchdogAndReload(t *testing.T) {
	keys := unitKeys(t)
	want := map[string]string{
		"Service.Type":                    "notify",
		"Service.ExecReload":              "/bin/kill -HUP $MAINPID",
		"Service.Restart":                 "on-failure",
		"Unit.StartLimitIntervalSec":      "0",
		"Service.User":                    "gatewayd",
		"Service.SupplementaryGroups":     "gpio i2c dialout",
		"Service.StateDirectory":          "gatewayd",
		"Service.ConfigurationDirectory":  "gatewayd",
		"Service.NoNewPrivileges":         "yes",
		"Service.ProtectSystem":           "strict",
		"Service.ProtectHome":             "yes",
		"Service.PrivateTmp":              "yes",
		"Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		"Service.SystemCallFilter":        "@system-service",
		"Service.DevicePolicy":            "closed",
		"Install.WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		if got := keys[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if len(keys["Service.WatchdogSec"]) != 1 {
		t.Error("no WatchdogSec")
	}
	// Only GPIO chips, I2C buses and serial ports.
	for _, d := range keys["Service.DeviceAllow"] {
		name, _, _ := strings.Cut(d, " ")
		if name != "char-gpiochip" && name != "char-i2c" && !strings.HasPrefix(name, "char-tty") {
			t.Errorf("DeviceAllow=%s: not a GPIO, I2C or tty device", d)
		}
	}
}

// systemd-sysusers --dry-run parses the file and says what it would create,
// without touching this machine's users.
func TestSysusersCreatesTheUserInItsGroups(t *testing.T) {
	sysusers, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		t.Skip("systemd-sysusers not installed (make verify-unit installs the systemd package)")
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"passwd", "group", "shadow", "gshadow"} {
		if err := os.WriteFile(filepath.Join(root, "etc", f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	abs, _ := filepath.Abs("gatewayd.sysusers")
	out, err := exec.Command(sysusers, "--root", root, abs).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	group, _ := os.ReadFile(filepath.Join(root, "etc", "group"))
	if !strings.HasPrefix(string(passwd), "gatewayd:") || !strings.Contains(string(passwd), ":/var/lib/gatewayd:") {
		t.Errorf("passwd:\n%s", passwd)
	}
	for _, g := range []string{"gpio", "i2c", "dialout"} {
		found := false
		for _, l := range strings.Split(string(group), "\n") {
			if strings.HasPrefix(l, g+":") && strings.HasSuffix(l, ":gatewayd") {
				found = true
			}
		}
		if !found {
			t.Errorf("group %s does not list gatewayd:\n%s", g, group)
		}
	}
}

// systemd-tmpfiles --root creates the directories in a scratch root.
func TestTmpfilesCreatesStateAndConfigurationDirectories(t *testing.T) {
	tmpfiles, err := exec.LookPath("systemd-tmpfiles")
	if err != nil {
		t.Skip("systemd-tmpfiles not installed (make verify-unit installs the systemd package)")
	}
	if os.Getuid() != 0 {
		t.Skip("systemd-tmpfiles sets owners: needs root")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\ngatewayd:x:999:999::/var/lib/gatewayd:/usr/sbin/nologin\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc", "group"), []byte("root:x:0:\ngatewayd:x:999:\n"), 0o644)
	abs, _ := filepath.Abs("gatewayd.tmpfiles")
	if out, err := exec.Command(tmpfiles, "--root", root, "--create", abs).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	for path, mode := range map[string]os.FileMode{"var/lib/gatewayd": 0o700, "etc/gatewayd": 0o750} {
		fi, err := os.Stat(filepath.Join(root, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if fi.Mode().Perm() != mode || !fi.IsDir() {
			t.Errorf("%s: mode %v, want a directory with %v", path, fi.Mode(), mode)
		}
	}
}
