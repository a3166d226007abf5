package client

import "testing"

// startGatewayd starts gatewayd's own broker on a loopback port.
func startGatewayd(t *testing.T) string {
	t.Skip("gatewayd broker not wired in yet")
	return ""
}
