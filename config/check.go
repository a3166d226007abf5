package config

import (
	"encoding"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxChecks bounds the nodes the checker visits, so that aliases nested on
// aliases cannot make it run for ever; yaml.v3's decoder has its own limits.
const maxChecks = 1 << 20

var (
	durationType        = reflect.TypeOf(time.Duration(0))
	unmarshalerType     = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	textUnmarshalerType = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()
)

// checker walks the YAML node tree beside the Go type it will be decoded into
// and records every problem with its key path and line. yaml.v3 reports only
// the first unknown key, and neither it nor its type errors name the key path.
type checker struct {
	problems []Problem
	budget   int
}

func (c *checker) add(line int, key, format string, args ...any) {
	c.problems = append(c.problems, Problem{Line: line, Key: key, Err: fmt.Errorf(format, args...)})
}

func (c *checker) check(n *yaml.Node, t reflect.Type, path string) {
	if c.budget <= 0 {
		return
	}
	c.budget--
	n = resolveAlias(n)
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // null keeps the value (and clears pointers, maps and slices)
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) {
		c.custom(n, t, path)
		return
	}
	if n.Kind == yaml.ScalarNode && pt.Implements(textUnmarshalerType) {
		c.custom(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Interface:
		// Anything decodes into an interface.
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			c.add(n.Line, path, "want a mapping of keys, got %s", describe(n))
			return
		}
		c.structMapping(n, fieldsOf(t), t, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			c.add(n.Line, path, "want a mapping, got %s", describe(n))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				c.merge(v, t, path)
				continue
			}
			key := join(path, k.Value)
			if c.duplicate(seen, k, key) {
				continue
			}
			c.check(k, t.Key(), key)
			c.check(v, t.Elem(), key)
		}
	case reflect.Slice, reflect.Array:
		if n.Kind != yaml.SequenceNode {
			c.add(n.Line, path, "want a list, got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			c.check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		c.scalar(n, t, path)
	}
}

// structMapping checks the keys of mapping n against the fields of a struct.
func (c *checker) structMapping(n *yaml.Node, fields structFields, t reflect.Type, path string) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			c.merge(v, t, path)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			c.add(k.Line, path, "want a key name, got %s", describe(k))
			continue
		}
		key := join(path, k.Value)
		if c.duplicate(seen, k, key) {
			continue
		}
		ft, ok := fields.byKey[k.Value]
		if !ok {
			if fields.inlineMap == nil {
				c.add(k.Line, key, "unknown key")
				continue
			}
			ft = fields.inlineMap
		}
		c.check(v, ft, key)
	}
}

// merge checks the mappings named by a "<<" merge key as part of the mapping
// that holds it.
func (c *checker) merge(v *yaml.Node, t reflect.Type, path string) {
	v = resolveAlias(v)
	if v.Kind == yaml.SequenceNode {
		for _, m := range v.Content {
			c.check(m, t, path)
		}
		return
	}
	c.check(v, t, path)
}

func (c *checker) duplicate(seen map[string]int, k *yaml.Node, key string) bool {
	if first, ok := seen[k.Value]; ok {
		c.add(k.Line, key, "duplicate key (first at line %d)", first)
		return true
	}
	seen[k.Value] = k.Line
	return false
}

// custom checks a value whose type decodes itself.
func (c *checker) custom(n *yaml.Node, t reflect.Type, path string) {
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		c.add(n.Line, path, "%s", yamlMessage(err))
	}
}

// scalar checks a value for a number, string, bool or duration.
func (c *checker) scalar(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.ScalarNode {
		c.add(n.Line, path, "want %s, got %s", want(t), describe(n))
		return
	}
	err := n.Decode(reflect.New(t).Interface())
	if err == nil {
		return
	}
	switch k := t.Kind(); {
	case t == durationType:
		c.add(n.Line, path, "%q is not a duration: want a number with a unit, such as 500ms, 10s, 5m or 1h30m", n.Value)
	case k >= reflect.Int && k <= reflect.Int64:
		bits := t.Bits()
		c.add(n.Line, path, "want an integer from %d to %d, got %q", int64(-1)<<(bits-1), int64(1)<<(bits-1)-1, n.Value)
	case k >= reflect.Uint && k <= reflect.Uintptr:
		c.add(n.Line, path, "want an integer from 0 to %d, got %q", uint64(math.MaxUint64)>>(64-t.Bits()), n.Value)
	case k == reflect.Float32 || k == reflect.Float64:
		c.add(n.Line, path, "want a number, got %q", n.Value)
	case k == reflect.Bool:
		c.add(n.Line, path, "want true or false, got %q", n.Value)
	default:
		c.add(n.Line, path, "%s", yamlMessage(err))
	}
}

// yamlMessage is the first message of a yaml.v3 error without its "line N:".
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		_, msg, _ := cutLine(te.Errors[0])
		return msg
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return fmt.Sprintf("%q", n.Value)
	}
}

func want(t reflect.Type) string {
	switch k := t.Kind(); {
	case t == durationType:
		return "a duration"
	case k == reflect.String:
		return "a string"
	case k == reflect.Bool:
		return "true or false"
	case k >= reflect.Int && k <= reflect.Uintptr:
		return "an integer"
	case k == reflect.Float32 || k == reflect.Float64:
		return "a number"
	default:
		return t.String()
	}
}

func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// structFields are the keys a struct accepts, as yaml.v3 names them: the yaml
// tag's name, else the lower-cased field name; ",inline" structs contribute
// their keys and an ",inline" map takes every other key.
type structFields struct {
	byKey     map[string]reflect.Type
	inlineMap reflect.Type // value type of the inline map, or nil
}

func fieldsOf(t reflect.Type) structFields {
	sf := structFields{byKey: map[string]reflect.Type{}}
	sf.add(t)
	return sf
}

func (sf *structFields) add(t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.PkgPath != "" && !f.Anonymous {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "" && !strings.Contains(string(f.Tag), ":") {
			tag = string(f.Tag)
		}
		if tag == "-" {
			continue
		}
		name, flags, _ := strings.Cut(tag, ",")
		if strings.Contains(","+flags+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch ft.Kind() {
			case reflect.Map:
				sf.inlineMap = ft.Elem()
			case reflect.Struct:
				sf.add(ft)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		sf.byKey[name] = f.Type
	}
}
