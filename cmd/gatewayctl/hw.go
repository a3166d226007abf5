package main

import (
	"fmt"
	"io"

	"gatewayd/board"
)

const hwUsage = `Usage:
  gatewayctl hw

Lists what this board offers devices: its model, the I2C buses, GPIO chips
and lines, serial ports and 1-Wire sensors, with the names a device entry of
gatewayd's configuration uses (bus, pin, port).
`

// runHW prints the board's hardware inventory.
func runHW(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			fmt.Fprint(stdout, hwUsage)
			return exitOK
		}
		fmt.Fprintf(stderr, "gatewayctl hw: unexpected argument %q\n%s", args[0], hwUsage)
		return exitUsage
	}
	if err := board.New("/").Inventory().WriteText(stdout); err != nil {
		fmt.Fprintf(stderr, "gatewayctl hw: %v\n", err)
		return exitFailed
	}
	return exitOK
}
