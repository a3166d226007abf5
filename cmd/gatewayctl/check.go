package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// runCheck validates a gatewayd configuration file with gatewayd's own loader
// (gatewayd --check), so that what it accepts is exactly what gatewayd
// accepts, and prints what would run. Exit status 0 valid, 2 not, 1 when
// gatewayd cannot be run.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr, "gatewayctl check FILE")
	gatewayd := fs.String("gatewayd", "", "the gatewayd binary (default: beside gatewayctl, else on PATH)")
	pos, err := parse(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) != 1 {
		return usageError(fs, stderr, errors.New("give one configuration FILE"))
	}
	bin := *gatewayd
	if bin == "" {
		bin = findGatewayd()
	}
	if bin == "" {
		fmt.Fprintln(stderr, "gatewayctl check: gatewayd not found beside gatewayctl or on PATH (give -gatewayd PATH)")
		return exitFailed
	}
	// A binary that is missing or not executable is reported without
	// starting a process for it.
	if _, err := exec.LookPath(bin); err != nil {
		fmt.Fprintf(stderr, "gatewayctl check: %s: %v\n", bin, err)
		return exitFailed
	}
	cmd := exec.Command(bin, "--check", "--config", pos[0])
	cmd.Stdout, cmd.Stderr = stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee) && ee.ExitCode() == exitUsage:
		return exitUsage
	default:
		fmt.Fprintf(stderr, "gatewayctl check: %s: %v\n", bin, err)
		return exitFailed
	}
}

func findGatewayd() string {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "gatewayd")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("gatewayd"); err == nil {
		return p
	}
	return ""
}
