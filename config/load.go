package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads the YAML file at path into dst, a pointer to a struct that already
// holds the defaults. See LoadBytes.
func Load(path string, dst any) error {
	f, err := ReadFile(path)
	if err != nil {
		return err
	}
	return f.Decode(dst)
}

// LoadBytes decodes data, named name in error messages, into dst, a pointer to
// a struct that already holds the defaults: keys absent from data keep them.
//
// Decoding is strict: an unknown key, a duplicate key or a value of the wrong
// type (a word where a number belongs, "10x" for a duration) is an error. When
// decoding succeeds and dst has a Validate() error method, it is called and the
// key of every *FieldError it returns is looked up in data to give its line.
//
// Every problem found is reported: the error is an *Error, one problem a line,
// "name:line: key.path: what is wrong". An empty document is valid and leaves
// dst as it was (before Validate).
func LoadBytes(name string, data []byte, dst any) error {
	f, err := Parse(name, data)
	if err != nil {
		return err
	}
	return f.Decode(dst)
}

// Problem is one thing wrong in a configuration file.
type Problem struct {
	Line int    // 1-based; 0 when no line applies
	Key  string // key path such as "broker.listeners[0].address"; "" when not about a key
	Err  error
}

// Error is every problem found in one configuration file.
type Error struct {
	File     string
	Problems []Problem
}

// Error returns one line per problem: "file:line: key: message".
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.File)
		if p.Line > 0 {
			b.WriteByte(':')
			b.WriteString(strconv.Itoa(p.Line))
		}
		b.WriteString(": ")
		if p.Key != "" {
			b.WriteString(p.Key)
			b.WriteString(": ")
		}
		b.WriteString(p.Err.Error())
	}
	return b.String()
}

// Unwrap returns the problems as errors: a *FieldError for those about a key.
func (e *Error) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		if p.Key != "" {
			out[i] = &FieldError{Key: p.Key, Err: p.Err}
		} else {
			out[i] = p.Err
		}
	}
	return out
}

// File is a parsed configuration file: it decodes into a config struct and
// finds the line of a key path, so that errors found later (a port already
// taken when the listener starts) can point at the line to change.
type File struct {
	Name string
	data []byte
	root *yaml.Node // the top-level node; nil for an empty document
}

// ReadFile reads and parses the YAML file at path.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse parses data, named name in error messages. Only syntax is checked here.
func Parse(name string, data []byte) (*File, error) {
	f := &File{Name: name, data: data}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return f, nil
	case err != nil:
		return nil, &Error{File: name, Problems: []Problem{syntaxProblem(err)}}
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, &Error{File: name, Problems: []Problem{syntaxProblem(err)}}
	default:
		return nil, &Error{File: name, Problems: []Problem{{Line: next.Line, Err: errors.New("a second YAML document: a configuration file holds one")}}}
	}
	if len(doc.Content) > 0 {
		f.root = doc.Content[0]
	}
	return f, nil
}

// syntaxProblem turns a yaml.v3 parse error ("yaml: line 3: mapping values are
// not allowed in this context") into a Problem with its line.
func syntaxProblem(err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if line, rest, ok := cutLine(msg); ok {
		return Problem{Line: line, Err: errors.New(rest)}
	}
	return Problem{Err: errors.New(msg)}
}

// cutLine splits "line 7: message" into 7 and "message".
func cutLine(s string) (int, string, bool) {
	rest, ok := strings.CutPrefix(s, "line ")
	if !ok {
		return 0, s, false
	}
	num, msg, ok := strings.Cut(rest, ": ")
	if !ok {
		return 0, s, false
	}
	n, err := strconv.Atoi(num)
	if err != nil {
		return 0, s, false
	}
	return n, msg, true
}

// Decode decodes the file into dst (a pointer, normally to a struct holding the
// defaults) strictly, then calls dst's Validate method if it has one. See
// LoadBytes for what is checked and how errors read.
func (f *File) Decode(dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("config: Decode needs a non-nil pointer, got %T", dst)
	}
	if f.root != nil {
		c := checker{budget: maxChecks}
		c.check(f.root, rv.Type().Elem(), "")
		if len(c.problems) > 0 {
			return &Error{File: f.Name, Problems: c.problems}
		}
		dec := yaml.NewDecoder(bytes.NewReader(f.data))
		dec.KnownFields(true)
		if err := dec.Decode(dst); err != nil {
			// The checker found nothing, so this is a case it does not model;
			// yaml.v3 still names the line.
			return f.decodeError(err)
		}
	}
	if v, ok := dst.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return f.Locate(err)
		}
	}
	return nil
}

func (f *File) decodeError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return &Error{File: f.Name, Problems: []Problem{syntaxProblem(err)}}
	}
	e := &Error{File: f.Name}
	for _, s := range te.Errors {
		line, msg, _ := cutLine(s)
		e.Problems = append(e.Problems, Problem{Line: line, Err: errors.New(msg)})
	}
	return e
}

// Locate turns err into an *Error of this file: each *FieldError in it (err may
// join several with errors.Join) gets the line its key stands on, or the line of
// the nearest enclosing key that is in the file when the key itself is not (a
// default that was never written down). Other errors are kept without a line.
func (f *File) Locate(err error) error {
	if err == nil {
		return nil
	}
	e := &Error{File: f.Name}
	for _, one := range flatten(err) {
		var fe *FieldError
		if errors.As(one, &fe) {
			e.Problems = append(e.Problems, Problem{Line: f.Line(fe.Key), Key: fe.Key, Err: fe.Err})
		} else {
			e.Problems = append(e.Problems, Problem{Err: one})
		}
	}
	return e
}

// flatten returns the leaves of a tree of joined errors.
func flatten(err error) []error {
	if _, ok := err.(*FieldError); ok {
		return []error{err}
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			if e != nil {
				out = append(out, flatten(e)...)
			}
		}
		return out
	}
	return []error{err}
}

// Line returns the line of the key path key ("broker.listeners[0].address"),
// or of its nearest enclosing key present in the file; 0 if none is.
func (f *File) Line(key string) int {
	n := f.root
	if n == nil {
		return 0
	}
	line := 0 // the top-level mapping is not a key: no line unless a key matches
	for _, seg := range splitKey(key) {
		n = resolveAlias(n)
		var next *yaml.Node
		var at int
		if seg.index >= 0 {
			if n.Kind == yaml.SequenceNode && seg.index < len(n.Content) {
				next = n.Content[seg.index]
				at = next.Line
			}
		} else if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg.name {
					next, at = n.Content[i+1], n.Content[i].Line
				}
			}
		}
		if next == nil {
			break
		}
		n, line = next, at
	}
	return line
}

type keySeg struct {
	name  string
	index int // >= 0 for [i]
}

// splitKey splits "a.b[2].c" into a, b, [2], c.
func splitKey(key string) []keySeg {
	var segs []keySeg
	for key != "" {
		switch key[0] {
		case '.':
			key = key[1:]
		case '[':
			end := strings.IndexByte(key, ']')
			if end < 0 {
				return append(segs, keySeg{name: key, index: -1})
			}
			i, err := strconv.Atoi(key[1:end])
			if err != nil {
				segs = append(segs, keySeg{name: key[1:end], index: -1})
			} else {
				segs = append(segs, keySeg{index: i})
			}
			key = key[end+1:]
		default:
			end := strings.IndexAny(key, ".[")
			if end < 0 {
				end = len(key)
			}
			segs = append(segs, keySeg{name: key[:end], index: -1})
			key = key[end:]
		}
	}
	return segs
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}
