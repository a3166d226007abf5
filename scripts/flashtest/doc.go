// Package flashtest tests scripts/flash, which prepares a Raspberry Pi OS
// image for a gateway's first boot, on synthetic images built with sfdisk,
// mformat and mkfs.ext4. It has no code of its own.
package flashtest
