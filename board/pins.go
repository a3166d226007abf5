package board

import (
	"fmt"
	"strconv"
	"strings"
)

// PinRef is a parsed pin name.
type PinRef struct {
	// GPIO is the SoC's GPIO number (GPIO17, or the header pin's), -1 when
	// the name gives a chip and line.
	GPIO int
	// Header is the 40-pin header position (P1-11), 0 when not given so.
	Header int
	// Chip and Line name a chip (gpiochip0, or its label) and a line offset.
	Chip string
	Line int
}

func (r PinRef) String() string {
	switch {
	case r.Chip != "":
		return fmt.Sprintf("%s:%d", r.Chip, r.Line)
	case r.Header != 0:
		return fmt.Sprintf("P1-%d", r.Header)
	}
	return fmt.Sprintf("GPIO%d", r.GPIO)
}

// header40 maps the Raspberry Pi 40-pin header's positions to GPIO numbers;
// the other positions are power and ground.
var header40 = map[int]int{
	3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23,
	18: 24, 19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5,
	31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
}

func headerPower(n int) string {
	switch n {
	case 1, 17:
		return "3.3 V power"
	case 2, 4:
		return "5 V power"
	case 6, 9, 14, 20, 25, 30, 34, 39:
		return "ground"
	}
	return ""
}

// ParsePin parses GPIO17 (also gpio17, BCM17), P1-11 (a 40-pin header
// position, also P1_11, PIN11) and chip:line (gpiochip0:17,
// pinctrl-rp1:17). hasHeader says whether the board has the Raspberry Pi
// header that P1 names refer to.
func ParsePin(name string, hasHeader bool) (PinRef, error) {
	s := strings.TrimSpace(name)
	if chip, line, ok := strings.Cut(s, ":"); ok {
		n, err := strconv.Atoi(line)
		if err != nil || n < 0 || chip == "" {
			return PinRef{}, fmt.Errorf("pin %q: want chip:line such as gpiochip0:17", name)
		}
		return PinRef{GPIO: -1, Chip: chip, Line: n}, nil
	}
	up := strings.ToUpper(s)
	for _, p := range []string{"P1-", "P1_", "PIN"} {
		if rest, ok := strings.CutPrefix(up, p); ok {
			n, err := strconv.Atoi(rest)
			if err != nil || n < 1 || n > 40 {
				return PinRef{}, fmt.Errorf("pin %q: header positions are P1-1 to P1-40", name)
			}
			if !hasHeader {
				return PinRef{}, fmt.Errorf("pin %q: this board has no Raspberry Pi 40-pin header; use GPIO<n> or chip:line", name)
			}
			if what := headerPower(n); what != "" {
				return PinRef{}, fmt.Errorf("pin %q: header position %d is %s, not a GPIO", name, n, what)
			}
			return PinRef{GPIO: header40[n], Header: n}, nil
		}
	}
	for _, p := range []string{"GPIO", "BCM"} {
		if rest, ok := strings.CutPrefix(up, p); ok {
			n, err := strconv.Atoi(rest)
			if err != nil || n < 0 || n > 1023 {
				break
			}
			return PinRef{GPIO: n}, nil
		}
	}
	return PinRef{}, fmt.Errorf("pin %q: want GPIO<n>, P1-<n> or chip:line (gpiochip0:17)", name)
}

// ChipInfo describes a GPIO chip as the kernel reports it.
type ChipInfo struct {
	Name  string   // gpiochip0
	Path  string   // /dev/gpiochip0
	Label string   // pinctrl-bcm2711, pinctrl-rp1
	Lines int      // number of lines
	Names []string // line names (GPIO17, ...), "" where the line has none
}

// resolvePin finds the chip and line offset for ref among chips. GPIO<n>
// is the line named GPIO<n> (Raspberry Pi kernels name the SoC's lines so),
// preferring the SoC's pin controller (label pinctrl-*), else line n of
// the pin controller when its lines have no names.
func resolvePin(ref PinRef, chips []ChipInfo) (chip ChipInfo, line int, err error) {
	if ref.Chip != "" {
		for _, c := range chips {
			if c.Name == ref.Chip || c.Label == ref.Chip || c.Path == ref.Chip {
				if ref.Line >= c.Lines {
					return ChipInfo{}, 0, fmt.Errorf("pin %s: %s has %d lines", ref, c.Name, c.Lines)
				}
				return c, ref.Line, nil
			}
		}
		return ChipInfo{}, 0, fmt.Errorf("pin %s: no GPIO chip %q", ref, ref.Chip)
	}
	want := fmt.Sprintf("GPIO%d", ref.GPIO)
	ordered := pinctrlFirst(chips)
	for _, c := range ordered {
		for i, n := range c.Names {
			if n == want {
				return c, i, nil
			}
		}
	}
	for _, c := range ordered {
		if strings.HasPrefix(c.Label, "pinctrl-") && !hasNames(c) && ref.GPIO < c.Lines {
			return c, ref.GPIO, nil
		}
	}
	return ChipInfo{}, 0, fmt.Errorf("pin %s: no GPIO line is named %s; use chip:line (gatewayctl hw lists the chips)", ref, want)
}

func hasNames(c ChipInfo) bool {
	for _, n := range c.Names {
		if n != "" {
			return true
		}
	}
	return false
}

// pinctrlFirst orders the SoC's pin controllers first, then by name: on a
// Raspberry Pi the GPIO<n> names also appear on expander chips.
func pinctrlFirst(chips []ChipInfo) []ChipInfo {
	var a, b []ChipInfo
	for _, c := range chips {
		if strings.HasPrefix(c.Label, "pinctrl-") {
			a = append(a, c)
		} else {
			b = append(b, c)
		}
	}
	return append(a, b...)
}
