// Package procstat reads a process's CPU time and memory from /proc: the
// fields the benchmark reports, parsed from the kernel's text formats.
package procstat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
)

// Sample is one reading of a process.
type Sample struct {
	CPUTicks uint64 // utime + stime, in clock ticks
	RSS      uint64 // VmRSS, bytes
	HWM      uint64 // VmHWM (peak RSS), bytes
}

// ParseStat returns utime and stime (fields 14 and 15) from /proc/PID/stat.
// The command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func ParseStat(b []byte) (utime, stime uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("procstat: stat without ')': %q", trunc(b))
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("procstat: stat has %d fields after the name", len(f))
	}
	if utime, err = strconv.ParseUint(string(f[11]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("procstat: utime: %w", err)
	}
	if stime, err = strconv.ParseUint(string(f[12]), 10, 64); err != nil {
		return 0, 0, fmt.Errorf("procstat: stime: %w", err)
	}
	return utime, stime, nil
}

// ParseStatus returns VmRSS and VmHWM in bytes from /proc/PID/status.
func ParseStatus(b []byte) (rss, hwm uint64, err error) {
	var haveRSS, haveHWM bool
	for _, line := range bytes.Split(b, []byte("\n")) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *uint64
		switch string(key) {
		case "VmRSS":
			dst, haveRSS = &rss, true
		case "VmHWM":
			dst, haveHWM = &hwm, true
		default:
			continue
		}
		f := bytes.Fields(val)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, 0, fmt.Errorf("procstat: %s: unexpected %q", key, val)
		}
		kb, err := strconv.ParseUint(string(f[0]), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("procstat: %s: %w", key, err)
		}
		*dst = kb * 1024
	}
	if !haveRSS || !haveHWM {
		return 0, 0, fmt.Errorf("procstat: status lacks VmRSS or VmHWM (a zombie?)")
	}
	return rss, hwm, nil
}

// atClkTck is the auxiliary vector entry glibc's sysconf(_SC_CLK_TCK) reads.
const atClkTck = 17

// ParseAuxv finds AT_CLKTCK in a native-endian 64-bit auxiliary vector.
func ParseAuxv(b []byte) (uint64, bool) {
	for i := 0; i+16 <= len(b); i += 16 {
		k := binary.NativeEndian.Uint64(b[i:])
		v := binary.NativeEndian.Uint64(b[i+8:])
		if k == 0 {
			break
		}
		if k == atClkTck {
			return v, true
		}
	}
	return 0, false
}

// ClockTicks is the unit of utime and stime: sysconf(_SC_CLK_TCK), read from
// this process's auxiliary vector; 100, Linux's USER_HZ, if that fails.
func ClockTicks() uint64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err == nil && strconv.IntSize == 64 {
		if v, ok := ParseAuxv(b); ok && v > 0 {
			return v
		}
	}
	return 100
}

// Read samples process pid.
func Read(pid int) (Sample, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Sample{}, err
	}
	u, s, err := ParseStat(st)
	if err != nil {
		return Sample{}, err
	}
	sb, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Sample{}, err
	}
	rss, hwm, err := ParseStatus(sb)
	if err != nil {
		return Sample{}, err
	}
	return Sample{CPUTicks: u + s, RSS: rss, HWM: hwm}, nil
}

func trunc(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// ParseCPUTotal returns the busy and total clock ticks of all CPUs from the
// first line of /proc/stat; busy excludes idle and iowait.
func ParseCPUTotal(b []byte) (busy, total uint64, err error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 5 || string(f[0]) != "cpu" {
		return 0, 0, fmt.Errorf("procstat: /proc/stat starts with %q", trunc(line))
	}
	for i, x := range f[1:] {
		v, err := strconv.ParseUint(string(x), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("procstat: /proc/stat field %d: %w", i+1, err)
		}
		// guest and guest_nice (fields 9, 10) are already in user and nice.
		if i >= 8 {
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}

// ReadCPUTotal reads /proc/stat.
func ReadCPUTotal() (busy, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	return ParseCPUTotal(b)
}
