package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters for new entries. They are OWASP's first recommended
// setting (19 MiB, 2 passes, 1 lane): one check is 32 ms of one core on the
// development server (BenchmarkCheckArgon2id), a login cost no user notices,
// and the memory is what makes offline guessing on GPUs expensive. More memory would buy little and costs a 1 GiB board dearly,
// because every concurrent check holds its own 19 MiB; checks are therefore
// also bounded in number (see PasswordFile).
const (
	argon2Memory  = 19 * 1024 // KiB
	argon2Time    = 2
	argon2Threads = 1
	argon2SaltLen = 16
	argon2KeyLen  = 32
)

// Bounds accepted when reading a password file. They stop a typo such as
// m=19456000 from making every login allocate 18 GiB.
const (
	maxArgon2Memory = 1 << 20 // KiB (1 GiB)
	maxArgon2Time   = 100
	maxPBKDF2Iter   = 10_000_000
	minSaltLen      = 8
	minKeyLen       = 16
	maxKeyLen       = 128
)

// verifier checks a password against one parsed hash.
type verifier interface {
	verify(password []byte) bool
	// cost identifies the scheme and work parameters, so the dummy used for
	// unknown users can take as long as the entries in the file.
	cost() string
}

// HashPassword returns a new argon2id hash of password in PHC string form,
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>, with a random 16-byte salt.
func HashPassword(password []byte) (string, error) {
	salt := make([]byte, argon2SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	h := argon2id{memory: argon2Memory, time: argon2Time, threads: argon2Threads, salt: salt}
	h.key = h.derive(password, argon2KeyLen)
	return h.String(), nil
}

// parseHash parses the hash part of a password file line.
func parseHash(s string) (verifier, error) {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		return parseArgon2id(s)
	case strings.HasPrefix(s, "$7$"):
		return parsePBKDF2(s)
	case strings.HasPrefix(s, "$6$"):
		return parseSHA512(s)
	case strings.HasPrefix(s, "$"):
		scheme, _, _ := strings.Cut(s[1:], "$")
		return nil, fmt.Errorf("unsupported hash scheme $%s$ (want $argon2id$, $7$ or $6$)", scheme)
	default:
		return nil, errors.New("password is not hashed (set it again, or hash the file with mosquitto_passwd -U)")
	}
}

// argon2id is gatewayd's own format.
type argon2id struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func parseArgon2id(s string) (*argon2id, error) {
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	f := strings.Split(s, "$")
	if len(f) != 6 {
		return nil, errors.New("argon2id hash: want $argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>")
	}
	if f[2] != "v=19" {
		return nil, fmt.Errorf("argon2id hash: version %q: only v=19 is supported", f[2])
	}
	var h argon2id
	params := strings.Split(f[3], ",")
	if len(params) != 3 {
		return nil, fmt.Errorf("argon2id hash: parameters %q: want m=<KiB>,t=<passes>,p=<lanes>", f[3])
	}
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(params[i], name+"=")
		if !ok {
			return nil, fmt.Errorf("argon2id hash: parameters %q: want m=<KiB>,t=<passes>,p=<lanes>", f[3])
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("argon2id hash: parameter %s=%q is not a number", name, v)
		}
		switch name {
		case "m":
			h.memory = uint32(n)
		case "t":
			h.time = uint32(n)
		case "p":
			if n == 0 || n > 255 {
				return nil, fmt.Errorf("argon2id hash: p=%d: want 1 to 255", n)
			}
			h.threads = uint8(n)
		}
	}
	if h.time == 0 || h.time > maxArgon2Time {
		return nil, fmt.Errorf("argon2id hash: t=%d: want 1 to %d", h.time, maxArgon2Time)
	}
	if h.memory < 8*uint32(h.threads) || h.memory > maxArgon2Memory {
		return nil, fmt.Errorf("argon2id hash: m=%d: want %d to %d KiB", h.memory, 8*uint32(h.threads), maxArgon2Memory)
	}
	var err error
	if h.salt, err = decodeB64(f[4]); err != nil || len(h.salt) < minSaltLen {
		return nil, fmt.Errorf("argon2id hash: salt is not base64 of at least %d bytes", minSaltLen)
	}
	if h.key, err = decodeB64(f[5]); err != nil || len(h.key) < minKeyLen || len(h.key) > maxKeyLen {
		return nil, fmt.Errorf("argon2id hash: hash is not base64 of %d to %d bytes", minKeyLen, maxKeyLen)
	}
	return &h, nil
}

func (h *argon2id) derive(password []byte, keyLen uint32) []byte {
	return argon2.IDKey(password, h.salt, h.time, h.memory, h.threads, keyLen)
}

func (h *argon2id) verify(password []byte) bool {
	return subtle.ConstantTimeCompare(h.derive(password, uint32(len(h.key))), h.key) == 1
}

func (h *argon2id) cost() string {
	return fmt.Sprintf("argon2id m=%d,t=%d,p=%d len=%d", h.memory, h.time, h.threads, len(h.key))
}

func (h *argon2id) String() string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", h.memory, h.time, h.threads,
		b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

// pbkdf2SHA512 is Mosquitto's $7$<iterations>$<salt>$<hash> (mosquitto_passwd
// default since 2.0): PBKDF2-HMAC-SHA512 of the password.
type pbkdf2SHA512 struct {
	iter int
	salt []byte
	key  []byte
}

func parsePBKDF2(s string) (*pbkdf2SHA512, error) {
	f := strings.Split(s, "$") // "", "7", iterations, salt, hash
	if len(f) != 5 {
		return nil, errors.New("$7$ hash: want $7$<iterations>$<salt>$<hash>")
	}
	iter, err := strconv.Atoi(f[2])
	if err != nil || iter < 1 || iter > maxPBKDF2Iter {
		return nil, fmt.Errorf("$7$ hash: iterations %q: want 1 to %d", f[2], maxPBKDF2Iter)
	}
	h := pbkdf2SHA512{iter: iter}
	if h.salt, err = decodeB64(f[3]); err != nil || len(h.salt) == 0 {
		return nil, errors.New("$7$ hash: salt is not base64")
	}
	if h.key, err = decodeB64(f[4]); err != nil || len(h.key) < minKeyLen || len(h.key) > maxKeyLen {
		return nil, fmt.Errorf("$7$ hash: hash is not base64 of %d to %d bytes", minKeyLen, maxKeyLen)
	}
	return &h, nil
}

func (h *pbkdf2SHA512) verify(password []byte) bool {
	key, err := pbkdf2.Key(sha512.New, string(password), h.salt, h.iter, len(h.key))
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(key, h.key) == 1
}

func (h *pbkdf2SHA512) cost() string {
	return fmt.Sprintf("pbkdf2-sha512 i=%d len=%d", h.iter, len(h.key))
}

// saltedSHA512 is Mosquitto's older $6$<salt>$<hash>: one SHA-512 of the
// password followed by the salt bytes. It is read so existing files keep
// working; it is far too fast to resist offline guessing, so SetPassword never
// writes it.
type saltedSHA512 struct {
	salt []byte
	key  []byte
}

func parseSHA512(s string) (*saltedSHA512, error) {
	f := strings.Split(s, "$") // "", "6", salt, hash
	if len(f) != 4 {
		return nil, errors.New("$6$ hash: want $6$<salt>$<hash>")
	}
	var h saltedSHA512
	var err error
	if h.salt, err = decodeB64(f[2]); err != nil || len(h.salt) == 0 {
		return nil, errors.New("$6$ hash: salt is not base64")
	}
	if h.key, err = decodeB64(f[3]); err != nil || len(h.key) != sha512.Size {
		return nil, fmt.Errorf("$6$ hash: hash is not base64 of %d bytes", sha512.Size)
	}
	return &h, nil
}

func (h *saltedSHA512) verify(password []byte) bool {
	d := sha512.New()
	d.Write(password)
	d.Write(h.salt)
	return subtle.ConstantTimeCompare(d.Sum(nil), h.key) == 1
}

func (h *saltedSHA512) cost() string { return "sha512" }

// decodeB64 accepts standard base64 with or without padding: Mosquitto pads,
// PHC strings do not.
func decodeB64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}
