package drivers

import (
	"errors"
	"fmt"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func joinErrs(errs []error) error { return errors.Join(errs...) }
