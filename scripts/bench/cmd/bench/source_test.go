package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestGatewaydConfigIsTheBriefPlusLiftedLimits(t *testing.T) {
	plain := gatewaydConfig("/d", "127.0.0.1:1", nil)
	want := "gateway_id: bench\ndata_dir: /d\nbroker:\n  listeners:\n    - address: 127.0.0.1:1\n  max_queued_messages: 1000000\n  max_queued_bytes: 1073741824\n"
	if plain != want {
		t.Fatalf("got\n%s\nwant\n%s", plain, want)
	}
	lifted := gatewaydConfig("/d", "127.0.0.1:1", []string{"max_connections", "max_connections_per_second_per_address"})
	want = "gateway_id: bench\ndata_dir: /d\nbroker:\n  listeners:\n    - address: 127.0.0.1:1\n      max_connections_per_second_per_address: 0\n" +
		"  max_queued_messages: 1000000\n  max_queued_bytes: 1073741824\n  max_connections: 0\n  max_connections_per_second_per_address: 0\n"
	if lifted != want {
		t.Fatalf("got\n%s\nwant\n%s", lifted, want)
	}
}

func TestLimitKeysAreOnlyThoseTheSourceKnows(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "broker"), 0o755); err != nil {
		t.Fatal(err)
	}
	code := "type Config struct {\n\tMaxConnections int `yaml:\"max_connections\"`\n}\n"
	if err := os.WriteFile(filepath.Join(src, "broker", "config.go"), []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := limitKeys(src); len(got) != 1 || got[0] != "max_connections" {
		t.Fatalf("got %v", got)
	}
	if got := limitKeys(t.TempDir()); got != nil {
		t.Fatalf("no source, got %v", got)
	}
}
