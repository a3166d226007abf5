package packet

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode from the decode and malformed tables")

// TestWriteFuzzCorpus regenerates the committed seed corpus of FuzzDecode:
// go test -run TestWriteFuzzCorpus -update-corpus ./broker/packet
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite testdata/fuzz/FuzzDecode")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(prefix, name string, b []byte) {
		file := prefix + "-" + strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
				return r
			}
			return '_'
		}, name)
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, file), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range decodeCases {
		write("valid", c.name, c.wire)
	}
	for _, c := range malformedCases {
		write("reject", c.name, c.wire)
	}
}

// FuzzDecode feeds arbitrary bytes to DecodeFixedHeader and Decode at every
// protocol level. Nothing may panic; every error is an *Error with a failure
// reason and a rule; whatever decodes must encode again and decode to the
// same packet.
func FuzzDecode(f *testing.F) {
	for _, c := range decodeCases {
		f.Add(c.wire)
	}
	for _, c := range malformedCases {
		f.Add(c.wire)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []Version{0, V31, V311, V5} {
			d := &Decoder{Version: v}
			h, n, err := DecodeFixedHeader(data)
			if err != nil {
				checkError(t, err)
				return
			}
			if n == 0 || len(data)-n < h.Remaining {
				return
			}
			p, err := d.Decode(h, data[n:n+h.Remaining])
			if err != nil {
				checkError(t, err)
				continue
			}
			ev := v
			if c, ok := p.(*Connect); ok {
				ev = c.Version
				if d.Version != ev {
					t.Fatalf("Decoder.Version %d after CONNECT level %d", d.Version, ev)
				}
			}
			b, err := Append(nil, p, ev)
			if err != nil {
				t.Fatalf("re-encoding decoded %#v at level %d: %v", p, ev, err)
			}
			got, err := decodeAll(&Decoder{Version: ev}, b)
			if err != nil {
				t.Fatalf("decoding re-encoded % x: %v", b, err)
			}
			samePacket(t, got, p)
		}
	})
}

func checkError(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if !e.Reason.IsError() || e.Rule == "" {
		t.Fatalf("error with reason %#x, rule %q", e.Reason, e.Rule)
	}
}

// FuzzFixedHeader checks DecodeFixedHeader on arbitrary bytes: it never
// panics, never reads past five bytes, and what it returns re-encodes to a
// header that decodes the same.
func FuzzFixedHeader(f *testing.F) {
	for _, c := range varIntCases {
		f.Add(cat(bs(0x30), c.wire))
	}
	f.Add(bs(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F))
	f.Add(bs(0x62, 0x02))
	f.Add(bs(0x00, 0x00))
	f.Add(bs(0xC0, 0x80, 0x00))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := DecodeFixedHeader(data)
		if err != nil {
			checkError(t, err)
			return
		}
		if n == 0 {
			if len(data) >= 5 {
				t.Fatalf("DecodeFixedHeader(% x) wants more bytes after 5", data)
			}
			return
		}
		if n < 2 || n > 5 || n > len(data) || h.Remaining < 0 || h.Remaining > MaxRemainingLength {
			t.Fatalf("DecodeFixedHeader(% x) = %+v, %d", data, h, n)
		}
		if err := checkFlags(h.Type, h.Flags); err != nil {
			t.Fatalf("accepted flags %04b for %v: %v", h.Flags, h.Type, err)
		}
		enc := AppendVarInt([]byte{byte(h.Type)<<4 | h.Flags}, h.Remaining)
		h2, n2, err := DecodeFixedHeader(enc)
		if err != nil || n2 != len(enc) || h2 != h || n2 > n {
			t.Fatalf("re-encoded header % x decodes to %+v, %d, %v; want %+v", enc, h2, n2, err, h)
		}
	})
}
