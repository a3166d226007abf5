// Package config reads gatewayd's YAML configuration strictly: an unknown key or
// a bad value is an error that names the file, the line and the key.
//
// Each package keeps its own config struct beside the code it configures, with
// a Validate method that returns *FieldError values; this package only finds
// the line that a key path stands on.
package config

import (
	"errors"
	"fmt"
)

// FieldError is a bad value at a key path such as "broker.listeners[0].address".
type FieldError struct {
	Key string
	Err error
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Errorf returns a *FieldError for key.
func Errorf(key, format string, args ...any) error {
	return &FieldError{Key: key, Err: fmt.Errorf(format, args...)}
}

// Prefix puts prefix (a parent key) in front of the key of every *FieldError in
// err, so a nested config can validate itself with keys relative to its root.
func Prefix(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]error, 0, len(errs))
	for _, e := range errs {
		var fe *FieldError
		if errors.As(e, &fe) {
			k := prefix
			if fe.Key != "" {
				if fe.Key[0] == '[' {
					k += fe.Key
				} else {
					k += "." + fe.Key
				}
			}
			out = append(out, &FieldError{Key: k, Err: fe.Err})
		} else {
			out = append(out, &FieldError{Key: prefix, Err: e})
		}
	}
	return errors.Join(out...)
}
