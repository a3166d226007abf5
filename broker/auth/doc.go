// Package auth holds the broker's password file, access control list and
// failed-login throttle. It reads Mosquitto's password_file and acl_file
// formats, so a gateway moving from Mosquitto keeps its files.
//
// It must never log, return or store a password in clear, never compare a
// secret with ==, and never import package broker: the broker adapts these
// types to its Authenticator and Authorizer, and a command-line tool can use
// them without a broker.
//
// # Password file
//
// One entry a line, user:hash. Blank lines and lines starting with '#' are
// ignored and kept when the file is rewritten. A user name may not contain ':'
// and may appear once. The hash is one of:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>    gatewayd (PHC string form, unpadded base64)
//	$7$<iterations>$<salt>$<hash>                    Mosquitto 2.0 default: PBKDF2-HMAC-SHA512
//	$6$<salt>$<hash>                                  older Mosquitto: SHA-512 of password then salt
//
// Salts and hashes are standard base64, padded or not. New entries (SetPassword,
// HashPassword) are argon2id with 19 MiB of memory, 2 passes and 1 lane,
// OWASP's recommended minimum; BenchmarkCheckArgon2id measures a check (32 ms
// of one core on the x86 development server; not yet measured on a Raspberry
// Pi, where it will be slower). At most GOMAXPROCS checks run at once, so
// logins hold at most GOMAXPROCS × 19 MiB however many arrive. Mosquitto 2.0.11 writes $7$ with only 101
// iterations (0.1 ms a check) and $6$ is a single SHA-512: both are accepted
// but weak against offline guessing; rewrite them with SetPassword. Plain-text
// passwords are refused.
//
// A check for a user not in the file spends the same work on a dummy entry of
// the file's most common kind, so that timing does not tell which user names
// exist.
//
// # ACL file
//
// Mosquitto's acl_file format, one rule or comment a line ('#' starts a
// comment only at the start of a line; elsewhere it is part of the topic):
//
//	# anonymous clients: topic lines before any user line
//	topic read public/#
//	# alice's rules
//	user alice
//	topic readwrite sensors/#
//	topic deny sensors/secret
//	# every client: %c is the client ID, %u the user name
//	pattern write devices/%c/status
//	pattern read users/%u/#
//
// A rule is "topic" or "pattern", an access word (read, write, readwrite or
// deny; readwrite if left out), then a topic filter with the usual + and #
// wildcards; the filter runs to the end of the line and may contain spaces.
// "user <name>" starts a section: the topic lines after it apply to clients
// logged in as that user; topic lines before the first user line apply to
// anonymous clients (no user name, or an empty one) and to no one else.
// Pattern lines apply to every client, wherever they stand. In pattern lines
// %c and %u stand for the client ID and user name; each must fill a whole topic
// level (devices/%c/status, not devices/%c-status, which is refused at load).
//
// A client is allowed an access if some rule that applies to it grants it and
// no deny rule that applies to it matches, whatever the order of the lines,
// as in Mosquitto 2.0.
// Read covers receiving messages and subscribing; write covers publishing.
// Following MQTT, wildcards at the first level do not match topics starting
// with '$', so "topic read #" does not grant $SYS.
//
// A subscription is allowed when a read rule covers the whole filter (every
// topic the filter matches, the rule matches too: sensors/# covers
// sensors/+/temp, but not #) and no deny rule shares any topic with it (deny
// sensors/secret refuses sensors/# and sensors/+, not sensors/public). Each
// message is checked again on delivery. $share/<group>/<filter> is judged by
// <filter>. Mosquitto 2.0 differs here: it accepts every subscription and
// only drops what the client may not read on delivery, so a client that
// subscribes to # under Mosquitto is refused by gatewayd and should
// subscribe to the filters it can read.
//
// A client ID or user name that is not a plain topic level (one containing
// '/', '+', '#' or NUL, or starting with '$') is never filled in: a pattern
// that would need it grants nothing, and a deny pattern that would need it
// denies the client everything. A pattern needing %u for an anonymous client,
// or %c for an empty client ID, does not apply to that client.
//
// # Throttle
//
// Throttle counts failed logins per IP address (per /64 for IPv6) and, after
// a few, makes each further attempt from that address wait, doubling up to a
// cap; a success forgives the address. It remembers a bounded number of
// addresses.
package auth
