//go:build !linux

package main

import "os"

// isJournal reports false: the journal exists only on Linux.
func isJournal(string, *os.File) bool { return false }
