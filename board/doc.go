// Package board finds and opens the gateway's hardware: it tells which board
// it runs on (Detect), names its GPIO lines (GPIO17, P1-11 on a Raspberry Pi
// header, gpiochip0:17), lists what is attached (Inventory: GPIO chips, I2C
// buses, 1-Wire devices, serial ports) and opens I2C buses, GPIO lines and
// serial ports for the drivers. A Board is the drivers' Hardware.
//
// GPIO goes through the kernel's character device (periph's gpioioctl),
// never through the deprecated sysfs GPIO interface, whose numbers moved on
// recent Raspberry Pi kernels. I2C goes through i2c-dev; on an adapter that
// can only do SMBus transfers, SMBusFallback turns register reads and writes
// into SMBus ones.
//
// Every path is looked up under a root directory, "/" on the gateway, so
// tests describe a board with a fake tree. This package must never drive a
// line or write to a bus on its own: it only opens what a driver asked for.
package board
