//go:build race

package broker

// raceEnabled: the race detector makes memory figures meaningless.
const raceEnabled = true
