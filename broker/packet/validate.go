package packet

import (
	"bytes"
	"unicode/utf8"
)

var sharePrefix = []byte("$share/")

// ValidUTF8 checks the MQTT rules for a UTF-8 encoded string: well-formed
// UTF-8 ([MQTT-1.5.4-1], which also excludes the surrogates U+D800..U+DFFF)
// and no U+0000 ([MQTT-1.5.4-2]). It returns an *Error with MalformedPacket.
func ValidUTF8(b []byte) error {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			if c == 0 {
				return malformed("[MQTT-1.5.4-2] (3.1.1 [MQTT-1.5.3-2]) string contains U+0000 at byte " + itoa(i))
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 {
			return malformed("[MQTT-1.5.4-1] (3.1.1 [MQTT-1.5.3-1]) string is not well-formed UTF-8 at byte " + itoa(i))
		}
		i += size
	}
	return nil
}

// ValidTopicName checks a topic name in PUBLISH or a will: at least one
// character ([MQTT-4.7.3-1]), no wildcard characters ([MQTT-3.3.2-2]), valid
// UTF-8 and at most 65535 bytes. It returns an *Error with TopicNameInvalid.
func ValidTopicName(t []byte) error { return validTopicName(t, true) }

// validTopicName is ValidTopicName; checkUTF8 is false when the decoder has
// already checked the string.
func validTopicName(t []byte, checkUTF8 bool) error {
	if len(t) == 0 {
		return &Error{TopicNameInvalid, "[MQTT-4.7.3-1] topic name is empty"}
	}
	if len(t) > 65535 {
		return &Error{TopicNameInvalid, "[MQTT-4.7.3-3] topic name of " + itoa(len(t)) + " bytes is longer than 65535"}
	}
	for i, c := range t {
		if c == '+' || c == '#' {
			return &Error{TopicNameInvalid, "[MQTT-3.3.2-2] topic name contains a wildcard at byte " + itoa(i)}
		}
	}
	if checkUTF8 {
		if err := ValidUTF8(t); err != nil {
			return &Error{TopicNameInvalid, err.(*Error).Rule}
		}
	}
	return nil
}

// ValidTopicFilter checks a topic filter in SUBSCRIBE or UNSUBSCRIBE: at least
// one character, valid UTF-8, at most 65535 bytes, '#' only as the whole last
// level ([MQTT-4.7.1-2]), '+' only as a whole level ([MQTT-4.7.1-3]). A filter
// starting with "$share/" must be $share/{group}/{filter} with a non-empty
// group free of '/', '+' and '#' ([MQTT-4.8.2-1], [MQTT-4.8.2-2]). It returns
// an *Error with TopicFilterInvalid.
func ValidTopicFilter(f []byte) error { return validTopicFilter(f, true) }

// validTopicFilter is ValidTopicFilter; checkUTF8 is false when the decoder
// has already checked the string.
func validTopicFilter(f []byte, checkUTF8 bool) error {
	if bytes.HasPrefix(f, sharePrefix) {
		rest := f[len(sharePrefix):]
		slash := bytes.IndexByte(rest, '/')
		if slash < 0 {
			return &Error{TopicFilterInvalid, "[MQTT-4.8.2-2] shared subscription has no topic filter after the share name"}
		}
		group := rest[:slash]
		if len(group) == 0 {
			return &Error{TopicFilterInvalid, "[MQTT-4.8.2-1] shared subscription has an empty share name"}
		}
		if bytes.ContainsAny(group, "+#") {
			return &Error{TopicFilterInvalid, "[MQTT-4.8.2-2] share name contains a wildcard"}
		}
		f = rest[slash+1:]
	}
	if len(f) == 0 {
		return &Error{TopicFilterInvalid, "[MQTT-4.7.3-1] topic filter is empty"}
	}
	if len(f) > 65535 {
		return &Error{TopicFilterInvalid, "[MQTT-4.7.3-3] topic filter of " + itoa(len(f)) + " bytes is longer than 65535"}
	}
	for i, c := range f {
		switch c {
		case '#':
			if i != len(f)-1 {
				return &Error{TopicFilterInvalid, "[MQTT-4.7.1-2] (5.0 [MQTT-4.7.1-1]) '#' is not the last character of the topic filter"}
			}
			if i > 0 && f[i-1] != '/' {
				return &Error{TopicFilterInvalid, "[MQTT-4.7.1-2] (5.0 [MQTT-4.7.1-1]) '#' does not occupy a whole level"}
			}
		case '+':
			if (i > 0 && f[i-1] != '/') || (i < len(f)-1 && f[i+1] != '/') {
				return &Error{TopicFilterInvalid, "[MQTT-4.7.1-3] (5.0 [MQTT-4.7.1-2]) '+' does not occupy a whole level"}
			}
		}
	}
	if checkUTF8 {
		if err := ValidUTF8(f); err != nil {
			return &Error{TopicFilterInvalid, err.(*Error).Rule}
		}
	}
	return nil
}

// ParseShared splits a shared subscription filter "$share/{group}/{filter}".
// ok is false when filter does not start with "$share/" followed by a group
// and a '/'. It does not validate the parts: ValidTopicFilter does.
func ParseShared(filter []byte) (group, topicFilter []byte, ok bool) {
	if !bytes.HasPrefix(filter, sharePrefix) {
		return nil, nil, false
	}
	rest := filter[len(sharePrefix):]
	slash := bytes.IndexByte(rest, '/')
	if slash < 0 {
		return nil, nil, false
	}
	return rest[:slash], rest[slash+1:], true
}
