package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"gatewayd/broker/auth"
	"gatewayd/broker/state"
	"gatewayd/config"
)

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// keyPaths lists every configuration key of t, "broker.listeners[].address"
// style, as the README's configuration reference names them.
func keyPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := prefix + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() != reflect.Struct || ft == reflect.TypeFor[time.Time]() {
			out = append(out, key) // a section is documented by its keys
		}
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, keyPaths(ft, key+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, keyPaths(ft.Elem(), key+"[].")...)
		}
	}
	return out
}

func TestREADMEDocumentsEveryConfigurationKey(t *testing.T) {
	doc := readme(t)
	for _, key := range keyPaths(reflect.TypeFor[Config](), "") {
		if !strings.Contains(doc, "| `"+key+"` |") {
			t.Errorf("README.md has no reference row for %s", key)
		}
	}
}

func TestREADMEConfigurationExamplesLoad(t *testing.T) {
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(readme(t), -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d yaml examples in README.md", len(blocks))
	}
	for i, b := range blocks {
		cfg := DefaultConfig()
		if err := config.LoadBytes("README.md example", []byte(b[1]), &cfg); err != nil {
			t.Errorf("example %d:\n%s\n%v", i+1, b[1], err)
		}
	}
}

// The README's complete example writes every default out; decoded into a
// zero Config it must be the configuration gatewayd runs with by default.
func TestREADMECompleteExampleIsTheDefaults(t *testing.T) {
	var example string
	for _, b := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(readme(t), -1) {
		if strings.Contains(b[1], "gateway_id: my-gateway") {
			example = b[1]
		}
	}
	if example == "" {
		t.Fatal("README.md has no complete example (gateway_id: my-gateway)")
	}
	var got Config
	if err := config.LoadBytes("README.md example", []byte(example), &got); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	if err := config.LoadBytes(defaultName, defaultYAML, &want); err != nil {
		t.Fatal(err)
	}
	want.GatewayID = "my-gateway"
	// Written out in the README, left zero (meaning the same values) in code.
	got.Broker.AuthThrottle, want.Broker.AuthThrottle = auth.ThrottleConfig{}, auth.ThrottleConfig{}
	if got.Store.MaxBytes == state.DefaultMaxBytes {
		got.Store.MaxBytes = 0
	}
	for i := range got.Broker.Listeners {
		if got.Broker.Listeners[i].Type == "mqtt" {
			got.Broker.Listeners[i].Type = ""
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("README complete example:\n%+v\ndefaults:\n%+v", got, want)
	}
}
