package board

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/mcp9808"
)

// The SMBus fallback against a real kernel: Linux's i2c-stub, an adapter
// that only does SMBus transfers, in a virtual machine.
//
// TestSMBusFallbackOnKernelI2CStub boots Debian's kernel under qemu with a
// busybox initramfs holding this package's test binary, which runs
// TestInVMI2CStub there as PID 1's child. It needs qemu-system-x86_64,
// busybox-static and an unpacked linux-image-*-amd64 package:
//
//	apt-get download linux-image-6.1.0-47-amd64-unsigned busybox-static
//	for d in *.deb; do dpkg -x $d /tmp/vm/root; done
//	GATEWAYD_VM_ROOT=/tmp/vm/root go test -run KernelI2CStub ./board
//
// Without GATEWAYD_VM_ROOT it is skipped.
func TestSMBusFallbackOnKernelI2CStub(t *testing.T) {
	vmRoot := os.Getenv("GATEWAYD_VM_ROOT")
	if vmRoot == "" || runtime.GOARCH != "amd64" {
		t.Skip("set GATEWAYD_VM_ROOT to an unpacked Debian amd64 kernel and busybox-static (see the comment)")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("no qemu-system-x86_64")
	}
	kernels, _ := filepath.Glob(filepath.Join(vmRoot, "boot/vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(vmRoot, "lib/modules/*/kernel/drivers/i2c"))
	if len(kernels) == 0 || len(mods) == 0 {
		t.Fatalf("no kernel or I2C modules under %s", vmRoot)
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd")
	for _, d := range []string{"bin", "proc", "sys", "dev", "lib"} {
		os.MkdirAll(filepath.Join(initrd, d), 0o755)
	}
	test := exec.Command("go", "test", "-c", "-o", filepath.Join(initrd, "board.test"), ".")
	test.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := test.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	copyFile(t, filepath.Join(vmRoot, "bin/busybox"), filepath.Join(initrd, "bin/busybox"), 0o755)
	for _, m := range []string{"i2c-dev.ko", "i2c-stub.ko"} {
		copyFile(t, filepath.Join(mods[0], m), filepath.Join(initrd, "lib", m), 0o644)
	}
	initScript := `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
insmod /lib/i2c-dev.ko
insmod /lib/i2c-stub.ko chip_addr=0x18
GATEWAYD_IN_VM=1 /board.test -test.run 'TestInVM' -test.v -test.count=1
echo "VM-EXIT=$?"
poweroff -f
`
	if err := os.WriteFile(filepath.Join(initrd, "init"), []byte(initScript), 0o755); err != nil {
		t.Fatal(err)
	}
	cpio := exec.Command("sh", "-c", "cd "+initrd+" && find . | cpio -o -H newc --quiet | gzip -1 > "+filepath.Join(dir, "initrd.gz"))
	if out, err := cpio.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}
	cmd := exec.Command(qemu, "-M", "pc", "-m", "512", "-nographic", "-no-reboot",
		"-kernel", kernels[0], "-initrd", filepath.Join(dir, "initrd.gz"),
		"-append", "console=ttyS0 panic=-1 quiet")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the VM did not finish:\n%s", out.String())
	}
	log := out.String()
	if !strings.Contains(log, "VM-EXIT=0") || !strings.Contains(log, "--- PASS: TestInVMI2CStub") {
		t.Fatalf("in the VM:\n%s", log)
	}
	t.Logf("in the VM:\n%s", log[strings.Index(log, "=== RUN"):])
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestInVMI2CStub runs inside the VM, with i2c-stub emulating a chip at
// 0x18.
func TestInVMI2CStub(t *testing.T) {
	if os.Getenv("GATEWAYD_IN_VM") == "" {
		t.Skip("runs inside the VM of TestSMBusFallbackOnKernelI2CStub")
	}
	b := New("/")
	defer b.Close()
	var stubBus string
	for _, x := range b.I2CBuses() {
		t.Logf("bus %d: %s", x.Number, x.Name)
		if x.Name == "SMBus stub driver" {
			stubBus = x.Name
		}
	}
	if stubBus == "" {
		t.Fatal("no i2c-stub bus")
	}
	bus, err := b.I2C(stubBus) // by adapter name
	if err != nil {
		t.Fatal(err)
	}
	fb, ok := bus.(*SMBusFallback)
	if !ok {
		t.Fatalf("bus is %T, want *SMBusFallback (i2c-stub has no plain I2C)", bus)
	}
	if fb.funcs&i2cFuncI2C != 0 {
		t.Fatalf("funcs %#x include I2C_FUNC_I2C", fb.funcs)
	}
	// Byte data, I2C block write and read, through the kernel's SMBus ioctl.
	if err := bus.Tx(0x18, []byte{0x05, 0xC1}, nil); err != nil {
		t.Fatal(err)
	}
	if err := bus.Tx(0x18, []byte{0x06, 0x94}, nil); err != nil {
		t.Fatal(err)
	}
	if err := bus.Tx(0x18, []byte{0x20, 1, 2, 3, 4}, nil); err != nil {
		t.Fatal(err)
	}
	r := make([]byte, 4)
	if err := bus.Tx(0x18, []byte{0x20}, r); err != nil || !bytes.Equal(r, []byte{1, 2, 3, 4}) {
		t.Fatalf("block read back % x, %v", r, err)
	}
	one := make([]byte, 1)
	if err := bus.Tx(0x18, []byte{0x22}, one); err != nil || one[0] != 3 {
		t.Fatalf("byte read back % x, %v", one, err)
	}
	// Nothing answers at 0x19.
	if err := bus.Tx(0x19, []byte{0x05}, one); err == nil {
		t.Error("a read from an absent address succeeded")
	}
	// periph's MCP9808 driver, unchanged, on the SMBus-only adapter.
	dev, err := mcp9808.New(bus, &mcp9808.Opts{Addr: 0x18, Res: mcp9808.Maximum})
	if err != nil {
		t.Fatal(err)
	}
	temp, err := dev.SenseTemp()
	if err != nil {
		t.Fatal(err)
	}
	if got := float64(temp-physic.ZeroCelsius) / float64(physic.Celsius); got != 25.25 {
		t.Errorf("temperature %v °C, want 25.25", got)
	}
}
