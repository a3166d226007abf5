package flashtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	bootStart = 8192  // sectors
	bootSize  = 65536 // 32 MiB (FAT16 in the test; Raspberry Pi OS uses FAT32, the same to mtools)
	rootStart = bootStart + bootSize
	imgSize   = 80 << 20
)

var bootOffset = fmt.Sprint(bootStart * 512)

func needTools(t *testing.T) {
	t.Helper()
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	for _, tool := range []string{"sfdisk", "mformat", "mcopy", "mtype", "mdir", "mkfs.ext4", "xz", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (make appliance-deps installs mtools, fdisk, e2fsprogs and xz-utils)", tool)
		}
	}
	os.Setenv("MTOOLS_SKIP_CHECK", "1")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// image builds a Raspberry Pi OS-like image: a FAT boot partition holding
// cmdline.txt and the given files, and an ext4 root partition.
func image(t *testing.T, dir string, bootFiles map[string]string) string {
	t.Helper()
	img := filepath.Join(dir, "raspios.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, imgSize); err != nil {
		t.Fatal(err)
	}
	sf := exec.Command("sfdisk", "-q", img)
	sf.Stdin = strings.NewReader(fmt.Sprintf("label: dos\nstart=%d, size=%d, type=c\nstart=%d, type=83\n", bootStart, bootSize, rootStart))
	if out, err := sf.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	boot := img + "@@" + bootOffset
	run(t, "mformat", "-i", boot, "-T", fmt.Sprint(bootSize), "-h", "64", "-s", "32", "-v", "bootfs", "::")
	files := map[string]string{"cmdline.txt": "console=serial0,115200 console=tty1 root=PARTUUID=abcd-02 rootfstype=ext4 fsck.repair=yes rootwait\n"}
	for k, v := range bootFiles {
		files[k] = v
	}
	for name, content := range files {
		p := filepath.Join(dir, "src-"+name)
		os.WriteFile(p, []byte(content), 0o644)
		run(t, "mcopy", "-i", boot, p, "::"+name)
	}
	run(t, "mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", fmt.Sprintf("offset=%d", rootStart*512), img, fmt.Sprintf("%dk", (imgSize/512-rootStart)/2))
	return img
}

// inputs writes a configuration, a stand-in .deb and an SSH key.
func inputs(t *testing.T, dir string) (conf, deb, key string) {
	conf = filepath.Join(dir, "gatewayd.yaml")
	deb = filepath.Join(dir, "gatewayd_1.0.0_arm64.deb")
	key = filepath.Join(dir, "id.pub")
	os.WriteFile(conf, []byte("gateway_id: porch\ndata_dir: /var/lib/gatewayd\n"), 0o644)
	os.WriteFile(deb, bytes.Repeat([]byte("not really a deb\n"), 10000), 0o644)
	os.WriteFile(key, []byte("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest test@laptop\n"), 0o644)
	return
}

func flash(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("../flash", args...)
	cmd.Stdin = nil // no terminal: a confirmation prompt reads nothing
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func readBoot(t *testing.T, img, name string) string {
	t.Helper()
	return run(t, "mtype", "-i", img+"@@"+bootOffset, "::"+name)
}

func bootHas(img, name string) bool {
	return exec.Command("mdir", "-i", img+"@@"+bootOffset, "::"+name).Run() == nil
}

func readBootFile(t *testing.T, dir, img, name string) []byte {
	t.Helper()
	p := filepath.Join(dir, "back-"+filepath.Base(name))
	run(t, "mcopy", "-n", "-i", img+"@@"+bootOffset, "::"+name, p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rootPartition(t *testing.T, img string) []byte {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b[rootStart*512:]
}

func TestCloudInitImageFromXZ(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	img := image(t, dir, map[string]string{"user-data": "#cloud-config\n# template\n", "meta-data": ""})
	rootBefore := rootPartition(t, img)
	run(t, "xz", "-0", img)
	conf, deb, key := inputs(t, dir)
	out := filepath.Join(dir, "gw.img")
	msg, err := flash(t, "--image", img+".xz", "--config", conf, "--deb", deb, "--hostname", "porch-gw",
		"--wifi-ssid", "Home Net", "--wifi-psk", "secret pass", "--wifi-country", "DE", "--ssh-key", key, "--user", "admin", "-o", out)
	if err != nil {
		t.Fatalf("flash: %v\n%s", err, msg)
	}
	if !strings.Contains(msg, "first boot by cloud-init") {
		t.Errorf("output: %s", msg)
	}
	if got, want := readBootFile(t, dir, out, "gatewayd/gatewayd.deb"), mustRead(t, deb); !bytes.Equal(got, want) {
		t.Error("gatewayd/gatewayd.deb on the boot partition is not the package")
	}
	if got, want := readBootFile(t, dir, out, "gatewayd/gatewayd.yaml"), mustRead(t, conf); !bytes.Equal(got, want) {
		t.Error("gatewayd/gatewayd.yaml on the boot partition is not the configuration")
	}
	ud := readBoot(t, out, "user-data")
	for _, want := range []string{"#cloud-config\n", "hostname: porch-gw\n", "  - name: admin\n",
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest test@laptop", "dpkg -i $b/gatewayd/gatewayd.deb", "/etc/gatewayd/gatewayd.yaml", "systemctl enable gatewayd"} {
		if !strings.Contains(ud, want) {
			t.Errorf("user-data has no %q:\n%s", want, ud)
		}
	}
	nc := readBoot(t, out, "network-config")
	for _, want := range []string{`"Home Net":`, `password: "secret pass"`, `regulatory-domain: "DE"`} {
		if !strings.Contains(nc, want) {
			t.Errorf("network-config has no %q:\n%s", want, nc)
		}
	}
	if !bootHas(out, "ssh") {
		t.Error("no ssh file on the boot partition")
	}
	if bootHas(out, "firstrun.sh") || strings.Contains(readBoot(t, out, "cmdline.txt"), "systemd.run") {
		t.Error("firstrun.sh written on a cloud-init image")
	}
	if !bytes.Equal(rootPartition(t, out), rootBefore) {
		t.Error("the root partition changed")
	}
}

func TestOlderImageGetsFirstrunThroughCmdline(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	img := image(t, dir, map[string]string{"config.txt": "dtparam=i2c_arm=on\n"})
	conf, deb, _ := inputs(t, dir)
	out := filepath.Join(dir, "gw.img")
	for i := 0; i < 2; i++ { // a second run replaces, not appends
		msg, err := flash(t, "--image", img, "--config", conf, "--deb", deb, "--hostname", "shed", "--wifi-ssid", "Farm", "--wifi-psk", "p4ss'word", "-o", out)
		if err != nil {
			t.Fatalf("flash: %v\n%s", err, msg)
		}
		if !strings.Contains(msg, "first boot by firstrun") {
			t.Errorf("output: %s", msg)
		}
		img = out
	}
	cmdline := readBoot(t, out, "cmdline.txt")
	if strings.Count(cmdline, "\n") != 1 || strings.Count(cmdline, "systemd.run=") != 1 ||
		!strings.HasPrefix(cmdline, "console=serial0,115200 console=tty1 root=PARTUUID=abcd-02") ||
		!strings.Contains(cmdline, " systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target") {
		t.Errorf("cmdline.txt: %q", cmdline)
	}
	fr := readBoot(t, out, "firstrun.sh")
	for _, want := range []string{"#!/bin/bash", "HOST=shed", "SSID=Farm", "dpkg -i $B/gatewayd/gatewayd.deb", "rm -f $B/firstrun.sh"} {
		if !strings.Contains(fr, want) {
			t.Errorf("firstrun.sh has no %q:\n%s", want, fr)
		}
	}
	p := filepath.Join(dir, "firstrun.sh")
	os.WriteFile(p, []byte(fr), 0o755)
	run(t, "bash", "-n", p)
	if got := readBoot(t, out, "config.txt"); got != "dtparam=i2c_arm=on\n" {
		t.Errorf("config.txt changed: %q", got)
	}
	if !bytes.Equal(readBootFile(t, dir, out, "gatewayd/gatewayd.deb"), mustRead(t, deb)) {
		t.Error("gatewayd/gatewayd.deb is not the package")
	}
}

// Bookworm images (with the Pi 5's device tree) mount the boot partition on
// /boot/firmware.
func TestBookwormFirstrunUsesBootFirmware(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	img := image(t, dir, map[string]string{"bcm2712-rpi-5-b.dtb": "dtb"})
	conf, deb, _ := inputs(t, dir)
	if msg, err := flash(t, "--image", img, "--config", conf, "--deb", deb, "--hostname", "gw", "-o", filepath.Join(dir, "o.img")); err != nil {
		t.Fatalf("flash: %v\n%s", err, msg)
	}
	if c := readBoot(t, filepath.Join(dir, "o.img"), "cmdline.txt"); !strings.Contains(c, "systemd.run=/boot/firmware/firstrun.sh ") {
		t.Errorf("cmdline.txt: %q", c)
	}
}

func TestRefusesWhatIsNotAnUnusedDisk(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	img := image(t, dir, nil)
	conf, deb, _ := inputs(t, dir)
	msg, err := flash(t, "--image", img, "--config", conf, "--deb", deb, "--hostname", "gw", "-o", filepath.Join(dir, "o.img"), "--device", filepath.Join(dir, "not-a-disk"))
	if err == nil || !strings.Contains(msg, "is not a block device") {
		t.Errorf("a regular file as --device: %v\n%s", err, msg)
	}
	// The disk holding / (no --yes, no terminal: even a missed check would
	// stop at the confirmation).
	src, err := exec.Command("findmnt", "-nvo", "SOURCE", "/").Output()
	root := strings.TrimSpace(string(src))
	if err != nil || !strings.HasPrefix(root, "/dev/") {
		t.Skipf("/ is not on a block device here (%q)", root)
	}
	disk, _ := exec.Command("lsblk", "-ndo", "PKNAME", root).Output()
	dev := "/dev/" + strings.TrimSpace(string(disk))
	if strings.TrimSpace(string(disk)) == "" {
		dev = root
	}
	msg, err = flash(t, "--image", img, "--config", conf, "--deb", deb, "--hostname", "gw", "-o", filepath.Join(dir, "o.img"), "--device", dev)
	if err == nil || !(strings.Contains(msg, "root file system") || strings.Contains(msg, "mounted")) {
		t.Errorf("the system disk %s as --device: %v\n%s", dev, err, msg)
	}
}

func TestRefusesAnImageWithoutABootPartition(t *testing.T) {
	needTools(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "blank.img")
	os.WriteFile(img, make([]byte, 1<<20), 0o644)
	conf, deb, _ := inputs(t, dir)
	msg, err := flash(t, "--image", img, "--config", conf, "--deb", deb, "--hostname", "gw", "-o", filepath.Join(dir, "o.img"))
	if err == nil || !strings.Contains(msg, "no FAT boot partition") {
		t.Errorf("blank image: %v\n%s", err, msg)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
