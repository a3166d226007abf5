package auth

import (
	"errors"
	"fmt"
)

// LineError is a problem with one line of a password or ACL file.
type LineError struct {
	Path string
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.Path, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ErrUnknownUser is returned by DeleteUser for a user the file does not hold.
var ErrUnknownUser = errors.New("no such user")
