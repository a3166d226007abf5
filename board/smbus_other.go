//go:build !linux

package board

import "errors"

var errNotLinux = errors.New("board: I2C and GPIO need Linux")

type i2cDevConn struct{}

func openI2CDev(string) (*i2cDevConn, uint64, error) { return nil, 0, errNotLinux }
func (*i2cDevConn) setAddr(uint16) error             { return errNotLinux }
func (*i2cDevConn) xfer(uint8, uint8, uint32, *smbusData) error {
	return errNotLinux
}
func (*i2cDevConn) close() error { return nil }

func gpioChipInfo(string) (string, string, int, error) { return "", "", 0, errNotLinux }
