package broker

import (
	"errors"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}
