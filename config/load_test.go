package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gatewayd/config"
)

// The types below stand for a program's configuration: a root that assembles
// sections, each validating itself with keys relative to its own root.

type root struct {
	GatewayID string        `yaml:"gateway_id"`
	Broker    brokerSection `yaml:"broker"`
	Log       logSection    `yaml:"log"`
	Tags      map[string]string
}

type brokerSection struct {
	Listeners     []listener    `yaml:"listeners"`
	MaxPacketSize uint32        `yaml:"max_packet_size"`
	SysInterval   time.Duration `yaml:"sys_interval"`
	Retain        bool          `yaml:"retain_available"`
	Ratio         float64       `yaml:"ratio"`
	Offset        int8          `yaml:"offset"`
}

type listener struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
}

type logSection struct {
	Level string `yaml:"level"`
}

func defaults() root {
	return root{
		GatewayID: "gw-default",
		Broker:    brokerSection{MaxPacketSize: 1 << 20, SysInterval: 10 * time.Second, Retain: true},
		Log:       logSection{Level: "info"},
	}
}

func (b *brokerSection) Validate() error {
	var errs []error
	for i, l := range b.Listeners {
		if !strings.Contains(l.Address, ":") {
			errs = append(errs, config.Errorf("listeners["+string(rune('0'+i))+"].address", "%q is not host:port", l.Address))
		}
	}
	if b.MaxPacketSize < 64 {
		errs = append(errs, config.Errorf("max_packet_size", "%d is below 64", b.MaxPacketSize))
	}
	return errors.Join(errs...)
}

func (r *root) Validate() error {
	var errs []error
	if r.GatewayID == "" {
		errs = append(errs, config.Errorf("gateway_id", "must not be empty"))
	}
	if r.Log.Level == "loud" {
		errs = append(errs, config.Errorf("log.level", "%q is not one of debug, info, warn, error", r.Log.Level))
	}
	errs = append(errs, config.Prefix("broker", r.Broker.Validate()))
	return errors.Join(errs...)
}

// writeFile writes content to a file named name in a fresh directory and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// load writes content to gatewayd.yaml and loads it over the defaults.
func load(t *testing.T, content string) (root, string, error) {
	t.Helper()
	path := writeFile(t, "gatewayd.yaml", content)
	cfg := defaults()
	return cfg, path, config.Load(path, &cfg)
}

// loadErr loads content, expects an error, and returns its lines with the
// temporary directory cut off so they read "gatewayd.yaml:7: ...".
func loadErr(t *testing.T, content string) []string {
	t.Helper()
	path := writeFile(t, "gatewayd.yaml", content)
	cfg := defaults()
	err := config.Load(path, &cfg)
	if err == nil {
		t.Fatalf("Load succeeded; want an error for:\n%s", content)
	}
	msg := strings.ReplaceAll(err.Error(), filepath.Dir(path)+string(filepath.Separator), "")
	return strings.Split(msg, "\n")
}

func wantLines(t *testing.T, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("error lines:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestLoadSetsValuesAndKeepsOtherDefaults(t *testing.T) {
	path := writeFile(t, "gatewayd.yaml", `
gateway_id: gw-7
broker:
  listeners:
    - name: lan
      address: 0.0.0.0:1883
  sys_interval: 1m30s
tags:
  site: north
`)
	cfg := defaults()
	if err := config.Load(path, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.GatewayID != "gw-7" || cfg.Broker.SysInterval != 90*time.Second || cfg.Tags["site"] != "north" {
		t.Errorf("decoded %+v", cfg)
	}
	if len(cfg.Broker.Listeners) != 1 || cfg.Broker.Listeners[0] != (listener{Name: "lan", Address: "0.0.0.0:1883"}) {
		t.Errorf("listeners = %+v", cfg.Broker.Listeners)
	}
	if cfg.Broker.MaxPacketSize != 1<<20 || !cfg.Broker.Retain || cfg.Log.Level != "info" {
		t.Errorf("defaults not kept: %+v", cfg)
	}
}

func TestLoadEmptyFileKeepsDefaults(t *testing.T) {
	for name, content := range map[string]string{
		"empty":         "",
		"comments only": "# nothing configured yet\n\n",
		"document mark": "---\n",
		"null":          "~\n",
	} {
		t.Run(name, func(t *testing.T) {
			cfg, _, err := load(t, content)
			if err != nil {
				t.Fatal(err)
			}
			want := defaults()
			if cfg.GatewayID != want.GatewayID || cfg.Broker.SysInterval != want.Broker.SysInterval || cfg.Log != want.Log {
				t.Errorf("got %+v, want the defaults %+v", cfg, want)
			}
		})
	}
}

func TestLoadEmptyFileStillValidates(t *testing.T) {
	path := writeFile(t, "gatewayd.yaml", "")
	cfg := defaults()
	cfg.GatewayID = ""
	err := config.Load(path, &cfg)
	if err == nil || !strings.HasSuffix(err.Error(), "gatewayd.yaml: gateway_id: must not be empty") {
		t.Errorf("err = %v; want the Validate error without a line", err)
	}
}

func TestLoadUnknownKeyNamesFileLineAndKeyPath(t *testing.T) {
	got := loadErr(t, `# gatewayd
gateway_id: gw-1

broker:
  listeners:
    - name: lan
      adress: 0.0.0.0:1883
`)
	wantLines(t, got, "gatewayd.yaml:7: broker.listeners[0].adress: unknown key")
}

func TestLoadUnknownTopLevelKey(t *testing.T) {
	wantLines(t, loadErr(t, "gateway_id: a\nbrokers: {}\n"), "gatewayd.yaml:2: brokers: unknown key")
}

func TestLoadReportsEveryProblemOneALine(t *testing.T) {
	got := loadErr(t, `gateway_id: gw-1
colour: blue
broker:
  max_packet_size: big
  sys_interval: 10x
  listeners:
    - address: a:1
      port: 1883
log:
  level: [info]
`)
	wantLines(t, got,
		"gatewayd.yaml:2: colour: unknown key",
		`gatewayd.yaml:4: broker.max_packet_size: want an integer from 0 to 4294967295, got "big"`,
		`gatewayd.yaml:5: broker.sys_interval: "10x" is not a duration: want a number with a unit, such as 500ms, 10s, 5m or 1h30m`,
		"gatewayd.yaml:8: broker.listeners[0].port: unknown key",
		"gatewayd.yaml:10: log.level: want a string, got a list",
	)
}

func TestLoadWrongTypes(t *testing.T) {
	cases := []struct {
		name, content, want string
	}{
		{"word for integer", "broker:\n  max_packet_size: lots\n",
			`gatewayd.yaml:2: broker.max_packet_size: want an integer from 0 to 4294967295, got "lots"`},
		{"negative for unsigned", "broker:\n  max_packet_size: -5\n",
			`gatewayd.yaml:2: broker.max_packet_size: want an integer from 0 to 4294967295, got "-5"`},
		{"integer overflow", "broker:\n  offset: 300\n",
			`gatewayd.yaml:2: broker.offset: want an integer from -128 to 127, got "300"`},
		{"word for bool", "broker:\n  retain_available: maybe\n",
			`gatewayd.yaml:2: broker.retain_available: want true or false, got "maybe"`},
		{"word for number", "broker:\n  ratio: half\n",
			`gatewayd.yaml:2: broker.ratio: want a number, got "half"`},
		{"duration without unit", "broker:\n  sys_interval: 10\n",
			`gatewayd.yaml:2: broker.sys_interval: "10" is not a duration: want a number with a unit, such as 500ms, 10s, 5m or 1h30m`},
		{"bad duration", "broker:\n  sys_interval: ten seconds\n",
			`gatewayd.yaml:2: broker.sys_interval: "ten seconds" is not a duration: want a number with a unit, such as 500ms, 10s, 5m or 1h30m`},
		{"scalar for section", "broker: on\n",
			`gatewayd.yaml:1: broker: want a mapping of keys, got "on"`},
		{"mapping for list", "broker:\n  listeners:\n    address: a:1\n",
			`gatewayd.yaml:3: broker.listeners: want a list, got a mapping`},
		{"list for string", "gateway_id: [a, b]\n",
			`gatewayd.yaml:1: gateway_id: want a string, got a list`},
		{"scalar document", "just words\n",
			`gatewayd.yaml:1: want a mapping of keys, got "just words"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wantLines(t, loadErr(t, c.content), c.want)
		})
	}
}

func TestLoadDuplicateKey(t *testing.T) {
	wantLines(t, loadErr(t, "gateway_id: a\nlog:\n  level: info\ngateway_id: b\n"),
		"gatewayd.yaml:4: gateway_id: duplicate key (first at line 1)")
}

func TestLoadSyntaxErrorHasLine(t *testing.T) {
	got := loadErr(t, "gateway_id: a\n  broker: b\n")
	wantLines(t, got, "gatewayd.yaml:2: mapping values are not allowed in this context")
}

func TestLoadSecondDocumentIsAnError(t *testing.T) {
	wantLines(t, loadErr(t, "gateway_id: a\n---\ngateway_id: b\n"),
		"gatewayd.yaml:2: a second YAML document: a configuration file holds one")
}

func TestLoadMissingFile(t *testing.T) {
	cfg := defaults()
	err := config.Load(filepath.Join(t.TempDir(), "absent.yaml"), &cfg)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "absent.yaml") {
		t.Errorf("err = %v; want a not-exist error naming the file", err)
	}
}

func TestLoadValidateErrorsGetTheLineOfTheirKey(t *testing.T) {
	got := loadErr(t, `gateway_id: gw-1
log:
  level: loud
broker:
  listeners:
    - name: lan
      address: no-port
    - name: wan
      address: also-no-port
`)
	wantLines(t, got,
		`gatewayd.yaml:3: log.level: "loud" is not one of debug, info, warn, error`,
		`gatewayd.yaml:7: broker.listeners[0].address: "no-port" is not host:port`,
		`gatewayd.yaml:9: broker.listeners[1].address: "also-no-port" is not host:port`,
	)
}

func TestLoadValidateErrorForAbsentKeyGetsNearestParentLine(t *testing.T) {
	// max_packet_size is not in the file: the value at fault is the default,
	// so the error points at the section that would hold it.
	path := writeFile(t, "gatewayd.yaml", "gateway_id: gw-1\n\nbroker:\n  sys_interval: 5s\n")
	cfg := defaults()
	cfg.Broker.MaxPacketSize = 1
	err := config.Load(path, &cfg)
	want := path + ":3: broker.max_packet_size: 1 is below 64"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}

	// No enclosing key in the file at all: no line.
	path = writeFile(t, "gatewayd.yaml", "gateway_id: gw-1\n")
	cfg = defaults()
	cfg.Broker.MaxPacketSize = 1
	err = config.Load(path, &cfg)
	want = path + ": broker.max_packet_size: 1 is below 64"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

func TestLoadErrorUnwrapsToFieldErrors(t *testing.T) {
	_, _, err := load(t, "broker:\n  listeners:\n    - address: nope\n")
	var le *config.Error
	if !errors.As(err, &le) || len(le.Problems) != 1 || le.Problems[0].Line != 3 {
		t.Fatalf("err = %#v", err)
	}
	var fe *config.FieldError
	if !errors.As(err, &fe) || fe.Key != "broker.listeners[0].address" {
		t.Errorf("FieldError = %+v", fe)
	}
}

func TestLoadBytesNamesTheSource(t *testing.T) {
	cfg := defaults()
	err := config.LoadBytes("default.yaml", []byte("bogus: 1\n"), &cfg)
	if err == nil || err.Error() != "default.yaml:1: bogus: unknown key" {
		t.Errorf("err = %v", err)
	}
	cfg = defaults()
	if err := config.LoadBytes("default.yaml", []byte("gateway_id: x\n"), &cfg); err != nil || cfg.GatewayID != "x" {
		t.Errorf("err = %v, cfg = %+v", err, cfg)
	}
}

func TestLoadAnchorsAndMergeKeys(t *testing.T) {
	cfg, _, err := load(t, `
base: &base
  name: lan
broker:
  listeners:
    - <<: *base
      address: 0.0.0.0:1883
`)
	// "base" is not a key of the configuration: anchors must live under known keys.
	if err == nil || !strings.Contains(err.Error(), ":2: base: unknown key") {
		t.Fatalf("err = %v", err)
	}
	cfg, _, err = load(t, `
broker:
  listeners:
    - &lan
      name: lan
      address: 0.0.0.0:1883
    - <<: *lan
      address: 0.0.0.0:8883
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Broker.Listeners) != 2 || cfg.Broker.Listeners[1] != (listener{Name: "lan", Address: "0.0.0.0:8883"}) {
		t.Errorf("listeners = %+v", cfg.Broker.Listeners)
	}
	wantLines(t, loadErr(t, "broker:\n  listeners:\n    - &l\n      nam: x\n    - *l\n"),
		"gatewayd.yaml:4: broker.listeners[0].nam: unknown key",
		"gatewayd.yaml:4: broker.listeners[1].nam: unknown key")
}

func TestLoadNullKeepsTheDefault(t *testing.T) {
	cfg, _, err := load(t, "gateway_id:\nbroker:\nlog: ~\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.GatewayID != "gw-default" || cfg.Log.Level != "info" || cfg.Broker.MaxPacketSize != 1<<20 {
		t.Errorf("cfg = %+v", cfg)
	}
}

func TestFileLocatesErrorsFoundAfterLoading(t *testing.T) {
	path := writeFile(t, "gatewayd.yaml", "broker:\n  listeners:\n    - name: lan\n      address: 127.0.0.1:1883\n")
	f, err := config.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaults()
	if err := f.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	// A listener that cannot bind reports its key relative to the broker.
	startErr := config.Prefix("broker", config.Errorf("listeners[0].address", "address already in use"))
	got := f.Locate(startErr).Error()
	if want := path + ":4: broker.listeners[0].address: address already in use"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if f.Line("broker.listeners[3].address") != 2 || f.Line("nothing") != 0 {
		t.Errorf("Line: %d %d", f.Line("broker.listeners[3].address"), f.Line("nothing"))
	}
}

func TestDecodeNeedsAPointer(t *testing.T) {
	f, err := config.Parse("x.yaml", []byte("a: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Decode(root{}); err == nil {
		t.Error("Decode into a non-pointer succeeded")
	}
}
