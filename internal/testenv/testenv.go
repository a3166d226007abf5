// Package testenv tells tests whether they run under qemu-user emulation
// (make test-arm) and stretches their deadlines to match.
//
// Under emulation the same code runs 5 to 20 times slower, so a deadline that
// only guards against a hang must grow with it; what a test asserts does not
// change. Tests take their deadlines through Scale, and check Emulator only
// to run a built binary through the same emulator or to skip something
// qemu-user cannot do (and then say exactly what).
package testenv

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// EmulatorEnv names the qemu-user emulator the test binary runs under;
// make test-arm sets it (qemu-arm-static, qemu-aarch64-static).
const EmulatorEnv = "GATEWAYD_QEMU_USER"

// ScaleEnv, when set, is the factor Scale applies (a number ≥ 1, such as
// 10 or 2.5); without it the factor is EmulatedFactor under emulation and
// 1 otherwise.
const ScaleEnv = "GATEWAYD_TEST_TIMEOUT_SCALE"

// EmulatedFactor is the default factor under qemu-user.
const EmulatedFactor = 10

// Emulator returns the qemu-user emulator the tests run under, or "" when
// they run natively.
func Emulator() string { return os.Getenv(EmulatorEnv) }

// Emulated reports whether the tests run under qemu-user.
func Emulated() bool { return Emulator() != "" }

var factor = sync.OnceValue(func() float64 {
	f, err := parseFactor(os.Getenv(ScaleEnv), Emulated())
	if err != nil {
		panic(err)
	}
	return f
})

func parseFactor(v string, emulated bool) (float64, error) {
	if v == "" {
		if emulated {
			return EmulatedFactor, nil
		}
		return 1, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 1 && f <= 1000) {
		return 0, fmt.Errorf("%s=%q: want a number from 1 to 1000", ScaleEnv, v)
	}
	return f, nil
}

// Factor returns the factor Scale applies.
func Factor() float64 { return factor() }

// Scale returns d stretched by Factor: d itself on a native run.
func Scale(d time.Duration) time.Duration {
	f := factor()
	if f == 1 {
		return d
	}
	return time.Duration(float64(d) * f)
}
