package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gatewayd/internal/testenv"
)

// buildGatewaydBeside builds gatewayd next to the gatewayctl under test,
// where `gatewayctl check` looks for it first.
func buildGatewaydBeside(t *testing.T) {
	t.Helper()
	p := filepath.Join(filepath.Dir(bin), "gatewayd")
	if _, err := os.Stat(p); err == nil {
		return
	}
	dst := p
	q := testenv.Emulator()
	if q != "" {
		// Under qemu-user (make test-arm) the kernel cannot run a binary
		// of the emulated architecture by itself (no binfmt), so the
		// gatewayd that gatewayctl runs is a script that runs the real one
		// through the same emulator.
		dst = p + ".bin"
	}
	if out, err := exec.Command("go", "build", "-o", dst, "gatewayd/cmd/gatewayd").CombinedOutput(); err != nil {
		t.Fatalf("building gatewayd: %v\n%s", err, out)
	}
	if q != "" {
		if err := os.WriteFile(p, []byte("#!/bin/sh\nexec "+q+" "+dst+" \"$@\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckValidConfigurationPrintsWhatWouldRun(t *testing.T) {
	buildGatewaydBeside(t)
	path := filepath.Join(t.TempDir(), "gatewayd.yaml")
	os.WriteFile(path, []byte(`gateway_id: porch
data_dir: /var/lib/gatewayd
broker:
  listeners:
    - name: local
      address: 127.0.0.1:1883
    - name: lan
      address: 0.0.0.0:8080
      type: ws
metrics:
  address: 127.0.0.1:9469
devices:
  - name: cpu
    driver: system
    interval: 1m
`), 0o644)
	out, stderr, code := ctl(t, "", "check", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{path + ": valid\n", "gateway_id porch, data_dir /var/lib/gatewayd\n",
		"listener  local  mqtt on 127.0.0.1:1883\n", "listener  lan  ws on 0.0.0.0:8080\n",
		"metrics   http://127.0.0.1:9469/metrics\n", "device    cpu  system, every 1m0s\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

func TestCheckInvalidConfigurationExits2WithFileLineKey(t *testing.T) {
	buildGatewaydBeside(t)
	path := filepath.Join(t.TempDir(), "gatewayd.yaml")
	os.WriteFile(path, []byte("broker:\n  sys_interval: 10x\n  colour: red\n"), 0o644)
	_, stderr, code := ctl(t, "", "check", path)
	if code != 2 {
		t.Errorf("exit %d, want 2: %s", code, stderr)
	}
	for _, want := range []string{path + ":2: broker.sys_interval", path + ":3: broker.colour: unknown key"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("no %q in:\n%s", want, stderr)
		}
	}
}

func TestCheckWithoutGatewaydExits1(t *testing.T) {
	_, stderr, code := ctl(t, "", "check", "-gatewayd", filepath.Join(t.TempDir(), "none"), "x.yaml")
	if code != 1 {
		t.Errorf("exit %d, want 1: %s", code, stderr)
	}
}
