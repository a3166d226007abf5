package board

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
)

// Family is the kind of board.
type Family string

const (
	FamilyRaspberryPi Family = "raspberrypi"
	FamilyDeviceTree  Family = "devicetree" // another board described by a device tree
	FamilyX86         Family = "x86"        // a PC: DMI tables
	FamilyUnknown     Family = "unknown"
)

// Info describes the board.
type Info struct {
	Family Family
	// Model is the board's own name ("Raspberry Pi 4 Model B Rev 1.4", a
	// DMI product name); "unknown" when nothing says.
	Model string
	// Serial is the board's serial number; empty when unknown or not
	// readable (DMI's product_serial is readable by root only).
	Serial string
	// Vendor is the DMI board vendor (x86 only).
	Vendor string
	// Header40 is true on Raspberry Pi models with the 40-pin header, where
	// P1-<n> names header pins.
	Header40 bool
}

// Detect reads the board's identity under root ("/" on the gateway): the
// device tree's model and serial-number (/proc/device-tree, or
// /sys/firmware/devicetree/base), else the DMI tables (/sys/class/dmi/id).
// It does not fail: what cannot be read is left empty.
func Detect(root string) Info {
	for _, dt := range []string{"proc/device-tree", "sys/firmware/devicetree/base"} {
		model := readString(filepath.Join(root, dt, "model"))
		if model == "" {
			continue
		}
		info := Info{Family: FamilyDeviceTree, Model: model, Serial: readString(filepath.Join(root, dt, "serial-number"))}
		if strings.HasPrefix(model, "Raspberry Pi") {
			info.Family = FamilyRaspberryPi
			info.Header40 = piHas40PinHeader(model)
		}
		return info
	}
	dmi := filepath.Join(root, "sys/class/dmi/id")
	if name := readString(filepath.Join(dmi, "product_name")); name != "" {
		return Info{
			Family: FamilyX86,
			Model:  name,
			Vendor: cmpOr(readString(filepath.Join(dmi, "board_vendor")), readString(filepath.Join(dmi, "sys_vendor"))),
			Serial: cmpOr(readString(filepath.Join(dmi, "product_serial")), readString(filepath.Join(dmi, "board_serial"))),
		}
	}
	return Info{Family: FamilyUnknown, Model: "unknown"}
}

// piHas40PinHeader tells the Raspberry Pi models with the 40-pin header:
// every one since the B+ except the Compute Modules (whose GPIOs are on
// the carrier board's connectors) and the original A and B (26 pins).
func piHas40PinHeader(model string) bool {
	if strings.Contains(model, "Compute Module") {
		return false
	}
	rest := strings.TrimPrefix(model, "Raspberry Pi ")
	switch {
	case strings.HasPrefix(rest, "Model B Rev"), strings.HasPrefix(rest, "Model A Rev"):
		return false // the first models: 26-pin header
	}
	return true
}

// readString returns a file's content without trailing NULs and spaces
// (device-tree strings end in NUL); "" if it cannot be read.
func readString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = bytes.TrimRight(b, "\x00\n\r\t ")
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
