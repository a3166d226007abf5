package wire

import (
	"bufio"
	"bytes"
	"testing"
)

func TestConnectMatchesTheSpecLayout(t *testing.T) {
	got := AppendConnect(nil, "c1", true)
	want := []byte{0x10, 14, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0, 0, 2, 'c', '1'}
	if !bytes.Equal(got, want) {
		t.Fatalf("got % x\nwant % x", got, want)
	}
	if AppendConnect(nil, "c1", false)[9] != 0 {
		t.Fatal("clean session flag set for a persistent session")
	}
}

func TestSubscribePublishPuback(t *testing.T) {
	sub := AppendSubscribe(nil, 7, []Sub{{"a/+", 1}})
	if want := []byte{0x82, 8, 0, 7, 0, 3, 'a', '/', '+', 1}; !bytes.Equal(sub, want) {
		t.Fatalf("subscribe % x", sub)
	}
	pub := AppendPublish(nil, "t", 1, 0x0102, []byte("xy"))
	if want := []byte{0x32, 7, 0, 1, 't', 1, 2, 'x', 'y'}; !bytes.Equal(pub, want) {
		t.Fatalf("publish % x", pub)
	}
	if q0 := AppendPublish(nil, "t", 0, 9, nil); !bytes.Equal(q0, []byte{0x30, 3, 0, 1, 't'}) {
		t.Fatalf("qos0 publish % x", q0)
	}
	if ack := AppendPuback(nil, 0xabcd); !bytes.Equal(ack, []byte{0x40, 2, 0xab, 0xcd}) {
		t.Fatalf("puback % x", ack)
	}
}

func TestLengthEncoding(t *testing.T) {
	for n, want := range map[int][]byte{0: {0}, 127: {0x7f}, 128: {0x80, 1}, 16383: {0xff, 0x7f}, 2097152: {0x80, 0x80, 0x80, 1}} {
		if got := AppendLength(nil, n); !bytes.Equal(got, want) {
			t.Errorf("%d: got % x want % x", n, got, want)
		}
	}
}

func TestReaderFramesConsecutivePackets(t *testing.T) {
	payload := bytes.Repeat([]byte{0xaa}, 300) // two-byte remaining length
	var stream []byte
	stream = AppendPublish(stream, "x/y", 1, 5, payload)
	stream = AppendPuback(stream, 5)
	stream = append(stream, Disconnect...)
	r := Reader{R: bufio.NewReaderSize(bytes.NewReader(stream), 1024)}

	first, body, n, err := r.Next()
	if err != nil || first>>4 != PUBLISH {
		t.Fatalf("first packet: %x %v", first, err)
	}
	topic, id, p, err := ParsePublish(first, body)
	if err != nil || string(topic) != "x/y" || id != 5 || !bytes.Equal(p, payload) {
		t.Fatalf("publish: %q %d %d %v", topic, id, len(p), err)
	}
	r.Release(n)
	first, body, n, err = r.Next()
	if err != nil || first>>4 != PUBACK || !bytes.Equal(body, []byte{0, 5}) {
		t.Fatalf("puback: %x % x %v", first, body, err)
	}
	r.Release(n)
	if first, _, _, err = r.Next(); err != nil || first>>4 != DISCONNECT {
		t.Fatalf("disconnect: %x %v", first, err)
	}
}

func TestReaderRejectsOversizeAndMalformed(t *testing.T) {
	big := AppendPublish(nil, "t", 0, 0, make([]byte, 100))
	if _, _, _, err := (Reader{R: bufio.NewReaderSize(bytes.NewReader(big), 16)}).Next(); err == nil {
		t.Fatal("packet larger than the buffer accepted")
	}
	bad := []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}
	if _, _, _, err := (Reader{R: bufio.NewReaderSize(bytes.NewReader(bad), 64)}).Next(); err != ErrMalformed {
		t.Fatalf("five-byte length: %v", err)
	}
	if _, _, _, err := ParsePublish(0x32, []byte{0, 5, 'a'}); err == nil {
		t.Fatal("truncated publish accepted")
	}
}
