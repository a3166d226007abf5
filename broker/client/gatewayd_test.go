package client

import (
	"testing"

	"gatewayd/internal/testbroker"
)

// startGatewayd starts gatewayd's own broker on a loopback port and returns
// its URL; it is shut down when the test ends.
func startGatewayd(t testing.TB) string {
	t.Helper()
	return testbroker.URL(testbroker.Start(t, nil))
}
