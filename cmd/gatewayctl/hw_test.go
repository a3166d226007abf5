package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestHWPrintsTheInventory(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"hw"}, nil, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if out.Len() == 0 {
		t.Error("gatewayctl hw printed nothing")
	}
	if code := run(t.Context(), []string{"hw", "extra"}, nil, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), "unexpected argument") {
		t.Errorf("hw extra: exit %d, %q", code, errb.String())
	}
}
