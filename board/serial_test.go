package board

import (
	"io"
	"testing"

	"github.com/creack/pty"
)

// A serial port opened by path, on a pseudo-terminal standing in for a
// UART: what one end writes the other reads, both ways.
func TestSerialOpensAPortAndCarriesBytes(t *testing.T) {
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	defer ptm.Close()
	defer pts.Close()
	b := New("/")
	port, err := b.Serial(pts.Name(), 115200)
	if err != nil {
		t.Fatal(err)
	}
	defer port.Close()
	if _, err := port.Write([]byte("$GPGGA\n")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 7)
	if _, err := io.ReadFull(ptm, got); err != nil || string(got) != "$GPGGA\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := ptm.Write([]byte("OK\n")); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, 3)
	if _, err := io.ReadFull(port, got); err != nil || string(got) != "OK\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := b.Serial("/dev/ttyNOPE9", 9600); err == nil {
		t.Error("a missing port opened")
	}
}
