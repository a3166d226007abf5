// Command gatewayctl publishes and subscribes to an MQTT broker, gatewayd's
// or any other, with the options of mosquitto_pub and mosquitto_sub that a
// gateway's operator uses most:
//
//	gatewayctl sub [-h host] [-p port] [-V 311|5] [-q qos] [-v] [-C count] [-W secs] -t filter [-t filter...] [filter...]
//	gatewayctl pub [-h host] [-p port] [-V 311|5] [-q qos] [-r] -t topic (-m message | -f file | -s | -n)
//
// --url replaces -h and -p (mqtt://, mqtts://, ws://, wss://). Exit status:
// 0 success, 1 connection or protocol failure, 2 bad usage, 27 sub timed
// out (-W) before -C messages arrived (as mosquitto_sub).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gatewayd/broker/client"
	"gatewayd/broker/packet"
)

const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitTimeout = 27
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `Usage:
  gatewayctl sub [options] -t FILTER [-t FILTER...] [FILTER...]
  gatewayctl pub [options] -t TOPIC (-m MESSAGE | -f FILE | -s | -n)
  gatewayctl passwd [-c] [-D] [--stdin] FILE USER
  gatewayctl hw
  gatewayctl status [options] [-prefix PREFIX] [-w DURATION]
  gatewayctl check FILE

Run "gatewayctl sub -help" or "gatewayctl pub -help" for the options.
`

// run is the whole command, with its environment handed in.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "sub":
		return runSub(ctx, args[1:], stdout, stderr)
	case "pub":
		return runPub(ctx, args[1:], stdin, stderr)
	case "passwd":
		return runPasswd(args[1:], stdin, stdout, stderr)
	case "hw":
		return runHW(args[1:], stdout, stderr)
	case "status":
		return runStatus(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "gatewayctl: unknown command %q\n%s", args[0], usage)
		return exitUsage
	}
}

// common holds the connection flags both commands share.
type common struct {
	host, url, user, pass, id, version string
	port, qos, keepalive               int
	cafile, cert, key, serverName      string
	alpn                               string
	insecure                           bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.host, "h", "127.0.0.1", "broker host")
	fs.IntVar(&c.port, "p", 0, "broker port (default 1883, 8883 with TLS)")
	fs.StringVar(&c.url, "url", "", "broker URL: mqtt://, mqtts://, ws://, wss:// (replaces -h and -p)")
	fs.StringVar(&c.user, "u", "", "user name")
	fs.StringVar(&c.pass, "P", "", "password")
	fs.StringVar(&c.id, "i", "", "client identifier (default: chosen by the broker, or gatewayctl-PID with 3.1.1)")
	fs.StringVar(&c.version, "V", "5", "protocol version: 311 or 5")
	fs.IntVar(&c.qos, "q", 0, "quality of service: 0, 1 or 2")
	fs.IntVar(&c.keepalive, "k", 60, "keepalive in seconds")
	fs.StringVar(&c.cafile, "cafile", "", "PEM file of the CAs trusted to sign the broker's certificate (turns TLS on)")
	fs.StringVar(&c.cert, "cert", "", "client certificate (PEM) for mutual TLS")
	fs.StringVar(&c.key, "key", "", "client key (PEM) for mutual TLS")
	fs.StringVar(&c.serverName, "tls-server-name", "", "name expected in the broker's certificate, sent as SNI (default: the host)")
	fs.StringVar(&c.alpn, "alpn", "", "comma-separated TLS ALPN protocols (x-amzn-mqtt-ca for AWS IoT Core on 443)")
	fs.BoolVar(&c.insecure, "insecure", false, "do not check the broker's certificate (testing only)")
}

// options turns the flags into client options; errors are usage errors.
func (c *common) options(defaultID string) (client.Options, error) {
	o := client.Options{Username: c.user, Password: c.pass, ClientID: c.id, CleanStart: true}
	switch c.version {
	case "5", "mqttv5", "v5":
		o.Protocol = packet.V5
	case "311", "mqttv311", "3.1.1", "4":
		o.Protocol = packet.V311
		if o.ClientID == "" {
			o.ClientID = defaultID
		}
	default:
		return o, fmt.Errorf("-V %q: want 311 or 5", c.version)
	}
	if c.qos < 0 || c.qos > 2 {
		return o, fmt.Errorf("-q %d: want 0, 1 or 2", c.qos)
	}
	if c.keepalive < 0 || c.keepalive > 65535 {
		return o, fmt.Errorf("-k %d: want 0..65535", c.keepalive)
	}
	o.KeepAlive = time.Duration(c.keepalive) * time.Second
	if c.keepalive == 0 {
		o.KeepAlive = -1
	}
	useTLS := c.cafile != "" || c.cert != "" || c.insecure || c.serverName != "" || c.alpn != ""
	if c.url != "" {
		o.URL = c.url
	} else {
		scheme, port := "mqtt", 1883
		if useTLS {
			scheme, port = "mqtts", 8883
		}
		if c.port != 0 {
			port = c.port
		}
		if port <= 0 || port > 65535 {
			return o, fmt.Errorf("-p %d: not a port", port)
		}
		o.URL = scheme + "://" + net.JoinHostPort(c.host, strconv.Itoa(port))
	}
	if useTLS {
		files := client.TLSFiles{CAFile: c.cafile, CertFile: c.cert, KeyFile: c.key, ServerName: c.serverName}
		if c.alpn != "" {
			files.NextProtos = strings.Split(c.alpn, ",")
		}
		cfg, err := client.NewTLSConfig(files)
		if err != nil {
			return o, err
		}
		cfg.InsecureSkipVerify = c.insecure
		o.TLS = cfg
	}
	return o, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// parse parses flags with positional arguments allowed among them
// ("sub '#' -v" as well as "sub -v '#'").
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name string, stderr io.Writer, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("gatewayctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nOptions:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseError is the exit status for a command line the flag package
// rejected (it has already printed the error and the usage).
func parseError(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// usageError reports a command line that parsed but makes no sense.
func usageError(fs *flag.FlagSet, stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
	fs.Usage()
	return exitUsage
}

func connect(ctx context.Context, o client.Options, stderr io.Writer, name string) (*client.Client, int) {
	c, err := client.New(o)
	if err != nil {
		fmt.Fprintf(stderr, "gatewayctl %s: %v\n", name, err)
		return nil, exitUsage
	}
	if err := c.Connect(ctx); err != nil {
		fmt.Fprintf(stderr, "gatewayctl %s: %v\n", name, err)
		return nil, exitFailed
	}
	return c, exitOK
}

func disconnect(c *client.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Disconnect(ctx)
}

func runSub(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("sub", stderr, "gatewayctl sub [options] -t FILTER [-t FILTER...] [FILTER...]")
	var cf common
	cf.register(fs)
	var filters stringList
	fs.Var(&filters, "t", "topic filter to subscribe to (repeatable)")
	verbose := fs.Bool("v", false, `print "topic payload" instead of the payload alone`)
	count := fs.Int("C", 0, "exit after this many messages (0: run until interrupted)")
	timeout := fs.Int("W", 0, "exit after this many seconds (status 27 if -C messages have not arrived)")
	pos, err := parse(fs, args)
	if err != nil {
		return parseError(err)
	}
	filters = append(filters, pos...)
	if len(filters) == 0 {
		return usageError(fs, stderr, errors.New("no topic filter: give -t FILTER or a FILTER argument"))
	}
	if *count < 0 || *timeout < 0 {
		return usageError(fs, stderr, errors.New("-C and -W must not be negative"))
	}
	for _, f := range filters {
		if err := packet.ValidTopicFilter([]byte(f)); err != nil {
			return usageError(fs, stderr, fmt.Errorf("-t %q: %v", f, err))
		}
	}
	o, err := cf.options(fmt.Sprintf("gatewayctl-sub-%d", os.Getpid()))
	if err != nil {
		return usageError(fs, stderr, err)
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(*timeout)*time.Second)
		defer cancel()
	}
	lost := make(chan error, 1)
	o.OnConnectionChange = func(s client.State, err error) {
		if s == client.StateDisconnected && err != nil {
			select {
			case lost <- err:
			default:
			}
		}
	}
	c, code := connect(ctx, o, stderr, "sub")
	if c == nil {
		if ctx.Err() == context.DeadlineExceeded {
			return exitTimeout
		}
		return code
	}
	defer disconnect(c)

	done := make(chan struct{})
	var mu sync.Mutex
	n := 0
	handler := func(m *client.Message) {
		mu.Lock()
		defer mu.Unlock()
		if *count > 0 && n >= *count {
			return
		}
		n++
		line := make([]byte, 0, len(m.Topic)+len(m.Payload)+2)
		if *verbose {
			line = append(append(line, m.Topic...), ' ')
		}
		line = append(append(line, m.Payload...), '\n')
		stdout.Write(line)
		if n == *count {
			close(done)
		}
	}
	subs := make([]client.Subscription, len(filters))
	for i, f := range filters {
		subs[i] = client.Subscription{Filter: f, QoS: byte(cf.qos)}
	}
	if _, err := c.Subscribe(ctx, handler, subs...); err != nil {
		fmt.Fprintf(stderr, "gatewayctl sub: %v\n", err)
		return exitFailed
	}
	select {
	case <-done:
		return exitOK
	case err := <-lost:
		fmt.Fprintf(stderr, "gatewayctl sub: %v\n", err)
		return exitFailed
	case <-ctx.Done():
		if ctx.Err() == context.DeadlineExceeded {
			fmt.Fprintf(stderr, "gatewayctl sub: timed out after %d s\n", *timeout)
			return exitTimeout
		}
		return exitOK // interrupted
	}
}

func runPub(ctx context.Context, args []string, stdin io.Reader, stderr io.Writer) int {
	fs := newFlagSet("pub", stderr, "gatewayctl pub [options] -t TOPIC (-m MESSAGE | -f FILE | -s | -n)")
	var cf common
	cf.register(fs)
	topic := fs.String("t", "", "topic to publish to")
	msg := fs.String("m", "", "message payload")
	file := fs.String("f", "", "send the contents of this file as the payload")
	fromStdin := fs.Bool("s", false, "send standard input as the payload")
	null := fs.Bool("n", false, "send an empty (null) payload")
	retain := fs.Bool("r", false, "retain the message")
	pos, err := parse(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) > 0 {
		return usageError(fs, stderr, fmt.Errorf("unexpected argument %q", pos[0]))
	}
	if *topic == "" {
		return usageError(fs, stderr, errors.New("no topic: give -t TOPIC"))
	}
	if err := packet.ValidTopicName([]byte(*topic)); err != nil {
		return usageError(fs, stderr, fmt.Errorf("-t %q: %v", *topic, err))
	}
	sources := 0
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "m", "f", "s", "n":
			sources++
		}
	})
	if sources != 1 {
		return usageError(fs, stderr, errors.New("give exactly one of -m, -f, -s, -n"))
	}
	var payload []byte
	switch {
	case *file != "":
		if payload, err = os.ReadFile(*file); err != nil {
			fmt.Fprintf(stderr, "gatewayctl pub: %v\n", err)
			return exitFailed
		}
	case *fromStdin:
		if payload, err = io.ReadAll(stdin); err != nil {
			fmt.Fprintf(stderr, "gatewayctl pub: reading standard input: %v\n", err)
			return exitFailed
		}
	case *null:
	default:
		payload = []byte(*msg)
	}
	o, err := cf.options(fmt.Sprintf("gatewayctl-pub-%d", os.Getpid()))
	if err != nil {
		return usageError(fs, stderr, err)
	}
	c, code := connect(ctx, o, stderr, "pub")
	if c == nil {
		return code
	}
	defer disconnect(c)
	m := &client.Message{Topic: *topic, Payload: payload, QoS: byte(cf.qos), Retain: *retain}
	if err := c.Publish(ctx, m); err != nil {
		fmt.Fprintf(stderr, "gatewayctl pub: %v\n", err)
		return exitFailed
	}
	return exitOK
}
