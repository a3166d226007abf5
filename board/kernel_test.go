package board

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"gatewayd/drivers"

	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/mcp9808"
)

// The board against a real kernel in a virtual machine: the SMBus fallback
// on Linux's i2c-stub (an adapter that only does SMBus transfers) and, with
// gpio-sim, GPIO lines through the character device.
//
// TestOnRealKernelInQEMU boots Debian's kernel under qemu with a
// busybox initramfs holding this package's test binary, which runs
// TestInVMI2CStub there as PID 1's child. It needs qemu-system-x86_64,
// busybox-static and an unpacked linux-image-*-amd64 package:
//
//	apt-get download linux-image-6.1.0-47-amd64-unsigned busybox-static
//	for d in *.deb; do dpkg -x $d /tmp/vm/root; done
//	GATEWAYD_VM_ROOT=/tmp/vm/root go test -run RealKernel ./board
//
// Without GATEWAYD_VM_ROOT it is skipped. With GATEWAYD_VM_GPIO_SIM naming
// a gpio-sim module built for that kernel (Debian does not ship gpio-sim;
// build drivers/gpio/gpio-sim.c with kernel/irq/irq_sim.c out of tree from
// linux-source-6.1 against the matching linux-headers, irq_sim calling
// generic_handle_irq), the VM also runs TestInVMGPIOSim: GPIO lines
// through the character device, as on the gateway.
func TestOnRealKernelInQEMU(t *testing.T) {
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
	gpioSim := os.Getenv("GATEWAYD_VM_GPIO_SIM")
	loadGPIO := ""
	if gpioSim != "" {
		configfs, _ := filepath.Glob(filepath.Join(vmRoot, "lib/modules/*/kernel/fs/configfs/configfs.ko"))
		if len(configfs) == 0 {
			t.Fatal("no configfs.ko")
		}
		copyFile(t, configfs[0], filepath.Join(initrd, "lib/configfs.ko"), 0o644)
		copyFile(t, gpioSim, filepath.Join(initrd, "lib/gpio-sim.ko"), 0o644)
		loadGPIO = "insmod /lib/configfs.ko\nmount -t configfs none /sys/kernel/config\ninsmod /lib/gpio-sim.ko\n"
	}
	initScript := "#!/bin/busybox sh\n" +
		"/bin/busybox --install -s /bin\n" +
		"mount -t proc proc /proc\n" +
		"mount -t sysfs sys /sys\n" +
		"mount -t devtmpfs dev /dev\n" +
		"insmod /lib/i2c-dev.ko\n" +
		"insmod /lib/i2c-stub.ko chip_addr=0x18\n" +
		loadGPIO +
		"GATEWAYD_IN_VM=1 /board.test -test.run 'TestInVM' -test.v -test.count=1\n" +
		"echo \"VM-EXIT=$?\"\n" +
		"poweroff -f\n"
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
	want := []string{"VM-EXIT=0", "--- PASS: TestInVMI2CStub"}
	if gpioSim != "" {
		want = append(want, "--- PASS: TestInVMGPIOSim")
	}
	ok := true
	for _, w := range want {
		ok = ok && strings.Contains(log, w)
	}
	if !ok {
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
		t.Skip("runs inside the VM of TestOnRealKernelInQEMU")
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

// TestInVMGPIOSim runs inside the VM with gpio-sim loaded: it makes a bank
// of 8 simulated lines (4 and 5 named GPIO4 and GPIO5), then runs the
// gpio-in and gpio-out drivers on lines opened by Board.Pin through the
// GPIO character device, driving the input and reading the output through
// gpio-sim's sysfs attributes.
func TestInVMGPIOSim(t *testing.T) {
	if os.Getenv("GATEWAYD_IN_VM") == "" {
		t.Skip("runs inside the VM of TestOnRealKernelInQEMU")
	}
	const cfs = "/sys/kernel/config/gpio-sim"
	if _, err := os.Stat(cfs); err != nil {
		t.Skip("gpio-sim not loaded")
	}
	dev := filepath.Join(cfs, "gw")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, v string) { t.Helper(); must(os.WriteFile(p, []byte(v), 0o644)) }
	must(os.MkdirAll(filepath.Join(dev, "bank0"), 0o755))
	write(filepath.Join(dev, "bank0/num_lines"), "8")
	for _, l := range []string{"4", "5"} {
		must(os.Mkdir(filepath.Join(dev, "bank0/line"+l), 0o755))
		write(filepath.Join(dev, "bank0/line"+l+"/name"), "GPIO"+l)
	}
	write(filepath.Join(dev, "live"), "1")
	chip := readString(filepath.Join(dev, "bank0/chip_name"))
	platform := readString(filepath.Join(dev, "dev_name"))
	sim := func(line, attr string) string {
		return filepath.Join("/sys/devices/platform", platform, chip, "sim_gpio"+line, attr)
	}
	t.Logf("gpio-sim chip %s on %s", chip, platform)

	b := New("/")
	inv := b.Inventory()
	found := false
	for _, g := range inv.GPIO {
		if g.Name == chip && g.Lines == 8 && strings.HasPrefix(g.Label, "gpio-sim") {
			found = true
		}
	}
	if !found {
		t.Errorf("inventory GPIO %+v lacks %s with 8 lines", inv.GPIO, chip)
	}

	// A device whose setup fails after Board.Pin (the line is busy: another
	// program holds it) opens the same line again once it is free.
	held := holdLine(t, "/dev/"+chip, 4)
	if _, err := openDriver(b, "door", "gpio-in", "GPIO4", "down"); err == nil {
		t.Fatal("gpio-in on a line another program holds opened")
	} else {
		t.Logf("line held elsewhere: %v", err)
	}
	held.Close()

	// An input by line name; edges come from gpio-sim's pull attribute.
	in, err := openDriver(b, "door", "gpio-in", "GPIO4", "down")
	must(err)
	readings := make(chan string, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- in.(drivers.Source).Run(ctx, func(r drivers.Reading) {
			if r.Channel == "state" {
				readings <- r.Text
			}
		})
	}()
	next := func() string {
		t.Helper()
		select {
		case s := <-readings:
			return s
		case <-time.After(30 * time.Second):
			t.Fatal("no reading")
			return ""
		}
	}
	if s := next(); s != "OFF" {
		t.Errorf("initial state %s, want OFF (pulled down)", s)
	}
	write(sim("4", "pull"), "pull-up")
	if s := next(); s != "ON" {
		t.Errorf("after pull-up: %s, want ON", s)
	}
	write(sim("4", "pull"), "pull-down")
	if s := next(); s != "OFF" {
		t.Errorf("after pull-down: %s, want OFF", s)
	}
	cancel()
	must(<-done)
	in.Close()

	// An output by chip:line.
	out, err := openDriver(b, "relay", "gpio-out", chip+":5", "")
	must(err)
	o := out.(drivers.Output)
	if v := readString(sim("5", "value")); v != "0" {
		t.Errorf("initial OFF: line value %s", v)
	}
	st, err := o.Set(context.Background(), "on")
	must(err)
	if v := readString(sim("5", "value")); st != "ON" || v != "1" {
		t.Errorf("after on: state %s, line value %s", st, v)
	}
	st, err = o.Set(context.Background(), "toggle")
	must(err)
	if v := readString(sim("5", "value")); st != "OFF" || v != "0" {
		t.Errorf("after toggle: state %s, line value %s", st, v)
	}
	// The same line twice is refused.
	if _, err := b.Pin("GPIO5"); err == nil || !strings.Contains(err.Error(), "already opened") {
		t.Errorf("second open of GPIO5: %v", err)
	}
}

// holdLine requests line of the GPIO chip at path as an input, as another
// program would (GPIO_GET_LINEHANDLE_IOCTL), until the returned file is
// closed.
func holdLine(t *testing.T, path string, line uint32) *os.File {
	t.Helper()
	chip, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer chip.Close()
	// struct gpiohandle_request: lineoffsets[64] u32, flags u32,
	// default_values[64] u8, consumer_label[32], lines u32, fd i32.
	var req [364]byte
	binary.LittleEndian.PutUint32(req[0:], line)
	binary.LittleEndian.PutUint32(req[256:], 1) // GPIOHANDLE_REQUEST_INPUT
	copy(req[324:356], "other-program")
	binary.LittleEndian.PutUint32(req[356:], 1)
	const getLineHandle = 0xc16cb403 // _IOWR(0xB4, 0x03, struct gpiohandle_request)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, chip.Fd(), getLineHandle, uintptr(unsafe.Pointer(&req[0]))); errno != 0 {
		t.Fatalf("request %s line %d: %v", path, line, errno)
	}
	fd := int32(binary.LittleEndian.Uint32(req[360:]))
	return os.NewFile(uintptr(fd), "line handle")
}

func openDriver(b *Board, name, driver, pin, pull string) (drivers.Device, error) {
	return drivers.Open(drivers.DeviceConfig{Name: name, Driver: driver, Pin: pin, Pull: pull}, drivers.Env{Hardware: b})
}
