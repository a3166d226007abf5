package main

import (
	"fmt"
	"os"
	"syscall"
)

// isJournal reports whether f is the stream systemd described in
// JOURNAL_STREAM ("device:inode"), so that a process started from a service
// with its stderr redirected elsewhere does not write priority prefixes.
func isJournal(env string, f *os.File) bool {
	if env == "" {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(env, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}
