package board

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// i2c-dev ioctls.
const (
	ioctlI2CSlave = 0x0703
	ioctlI2CFuncs = 0x0705
	ioctlI2CSMBus = 0x0720
)

// i2cDevConn is /dev/i2c-N.
type i2cDevConn struct {
	f *os.File
}

// smbusIoctlData is struct i2c_smbus_ioctl_data.
type smbusIoctlData struct {
	readWrite uint8
	command   uint8
	size      uint32
	data      uintptr
}

func openI2CDev(path string) (*i2cDevConn, uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	var funcs uint64
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ioctlI2CFuncs, uintptr(unsafe.Pointer(&funcs))); e != 0 {
		f.Close()
		return nil, 0, fmt.Errorf("%s: I2C_FUNCS: %w", path, e)
	}
	return &i2cDevConn{f: f}, funcs, nil
}

func (c *i2cDevConn) setAddr(addr uint16) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, c.f.Fd(), ioctlI2CSlave, uintptr(addr)); e != 0 {
		return fmt.Errorf("I2C_SLAVE: %w", e)
	}
	return nil
}

func (c *i2cDevConn) xfer(rw, cmd uint8, size uint32, data *smbusData) error {
	arg := smbusIoctlData{readWrite: rw, command: cmd, size: size}
	if data != nil {
		arg.data = uintptr(unsafe.Pointer(data))
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, c.f.Fd(), ioctlI2CSMBus, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return fmt.Errorf("I2C_SMBUS: %w", e)
	}
	return nil
}

func (c *i2cDevConn) close() error { return c.f.Close() }

// gpioChipInfo reads a GPIO chip's name, label and line count
// (GPIO_GET_CHIPINFO_IOCTL).
func gpioChipInfo(path string) (name, label string, lines int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", 0, err
	}
	defer f.Close()
	var info struct {
		name  [32]byte
		label [32]byte
		lines uint32
	}
	const gpioGetChipInfo = 0x8044B401 // _IOR(0xB4, 0x01, struct gpiochip_info)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), gpioGetChipInfo, uintptr(unsafe.Pointer(&info))); e != 0 {
		return "", "", 0, e
	}
	return cstr(info.name[:]), cstr(info.label[:]), int(info.lines), nil
}

func cstr(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
