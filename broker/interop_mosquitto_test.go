package broker_test

import (
	"bufio"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"gatewayd/broker"
)

// mosquittoProc is a running mosquitto_sub whose output lines are collected.
type mosquittoProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	read   chan struct{} // closed when stdout is drained
	exited chan struct{} // closed when the process has been waited for
	err    error         // from Wait, valid once exited is closed
}

func needMosquitto(t *testing.T, tool string) string {
	t.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		t.Skipf("%s not installed (apt-get install mosquitto-clients): %v", tool, err)
	}
	return path
}

// startMosquittoSub runs mosquitto_sub against b with args; it is killed and
// waited for when the test ends.
func startMosquittoSub(t *testing.T, b *testBroker, args ...string) *mosquittoProc {
	t.Helper()
	bin := needMosquitto(t, "mosquitto_sub")
	cmd := exec.Command(bin, append([]string{"-h", b.host, "-p", b.port}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("mosquitto_sub stdout: %v", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	p := &mosquittoProc{cmd: cmd, read: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(p.read)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	go func() {
		<-p.read // Wait closes the pipe: read everything first
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// startMosquittoSubscribed starts mosquitto_sub with one -t and returns
// once the broker counts its subscription (mosquitto_sub's own debug output
// is block-buffered on a pipe, so it cannot tell). Other subscriptions on b
// must not change meanwhile.
func startMosquittoSubscribed(t *testing.T, b *testBroker, args ...string) *mosquittoProc {
	t.Helper()
	before := b.Stats().Subscriptions
	p := startMosquittoSub(t, b, args...)
	deadline := time.Now().Add(waitTimeout)
	for b.Stats().Subscriptions <= before {
		select {
		case <-p.exited:
			t.Fatalf("mosquitto_sub %v exited before subscribing (%v):\n%s", args, p.err, strings.Join(p.output(), "\n"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto_sub %v: broker Stats().Subscriptions still %d after %v", args, before, waitTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return p
}

func (p *mosquittoProc) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits for an output line satisfying match.
func (p *mosquittoProc) waitLine(t *testing.T, what string, match func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		for _, l := range p.output() {
			if match(l) {
				return l
			}
		}
		select {
		case <-p.exited:
			for _, l := range p.output() {
				if match(l) {
					return l
				}
			}
			t.Fatalf("mosquitto_sub exited (%v) without %s; output:\n%s", p.err, what, strings.Join(p.output(), "\n"))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto_sub: no %s within %v; output:\n%s", what, waitTimeout, strings.Join(p.output(), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitExit waits for the process to exit by itself and fails unless it
// exited with status 0.
func (p *mosquittoProc) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		if p.err != nil {
			t.Errorf("mosquitto_sub exited with %v; output:\n%s", p.err, strings.Join(p.output(), "\n"))
		}
	case <-time.After(waitTimeout):
		t.Errorf("mosquitto_sub still running %v after it should have exited; output:\n%s", waitTimeout, strings.Join(p.output(), "\n"))
	}
}

// mosquittoPub runs mosquitto_pub to completion against b.
func mosquittoPub(t *testing.T, b *testBroker, args ...string) {
	t.Helper()
	bin := needMosquitto(t, "mosquitto_pub")
	cmd := exec.Command(bin, append([]string{"-h", b.host, "-p", b.port}, args...)...)
	cmd.WaitDelay = time.Second
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		defer close(done)
		out, err = cmd.CombinedOutput()
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("mosquitto_pub %v still running after %v", args, waitTimeout)
	}
	if err != nil {
		t.Fatalf("mosquitto_pub %v: %v\n%s", args, err, out)
	}
}

var mosquittoVersions = []string{"31", "311", "5"}

// mosquitto_pub and mosquitto_sub at MQTT 3.1, 3.1.1 and 5.0 exchange a
// message at QoS 0, 1 and 2 through the broker.
func TestInteropMosquittoPubSubRoundTrip(t *testing.T) {
	for _, v := range mosquittoVersions {
		for qos := 0; qos <= 2; qos++ {
			t.Run(fmt.Sprintf("-V %s -q %d", v, qos), func(t *testing.T) {
				// A broker each: the subscription count tells when mosquitto_sub is ready.
				b := startBroker(t, nil, broker.Options{})
				topic := fmt.Sprintf("interop/%s/%d", v, qos)
				payload := fmt.Sprintf("hello from mosquitto_pub v%s qos %d", v, qos)
				sub := startMosquittoSubscribed(t, b, "-V", v, "-q", strconv.Itoa(qos), "-t", topic, "-C", "1", "-W", "20",
					"-i", fmt.Sprintf("msub-%s-%d", v, qos), "-F", "MSG %t %q %r %p")
				mosquittoPub(t, b, "-V", v, "-q", strconv.Itoa(qos), "-t", topic, "-m", payload, "-i", fmt.Sprintf("mpub-%s-%d", v, qos))
				want := fmt.Sprintf("MSG %s %d 0 %s", topic, qos, payload)
				sub.waitLine(t, fmt.Sprintf("%q", want), func(l string) bool { return strings.HasPrefix(l, "MSG ") })
				var got []string
				for _, l := range sub.output() {
					if strings.HasPrefix(l, "MSG ") {
						got = append(got, l)
					}
				}
				if len(got) != 1 || got[0] != want {
					t.Errorf("mosquitto_sub printed %q, want [%q] (topic, qos, retain, payload)", got, want)
				}
				sub.waitExit(t)
			})
		}
	}
}

// A message published with mosquitto_pub -r is retained and given to a later
// mosquitto_sub -C 1 with the retain flag set.
func TestInteropMosquittoRetained(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	for _, v := range mosquittoVersions {
		t.Run("-V "+v, func(t *testing.T) {
			topic := "interop/retained/" + v
			payload := "kept for later v" + v
			mosquittoPub(t, b, "-V", v, "-q", "1", "-r", "-t", topic, "-m", payload)
			sub := startMosquittoSub(t, b, "-V", v, "-t", topic, "-C", "1", "-W", "20", "-F", "%t %r %p")
			want := fmt.Sprintf("%s 1 %s", topic, payload)
			line := sub.waitLine(t, "the retained message", func(l string) bool { return strings.HasPrefix(l, topic) })
			if line != want {
				t.Errorf("mosquitto_sub -C 1 printed %q, want %q (topic, retain flag, payload)", line, want)
			}
			sub.waitExit(t)
		})
	}
}

// mosquitto_sub -t '$SYS/#' sees the broker version and the connected
// client count.
func TestInteropMosquittoSysTopics(t *testing.T) {
	b := startBroker(t, func(c *broker.Config) { c.SysInterval = 200 * time.Millisecond }, broker.Options{Version: "gatewayd-conformance"})
	_ = dialV3(t, b, "other-client", 4, true)
	sub := startMosquittoSub(t, b, "-t", "$SYS/#", "-v", "-C", "200", "-W", "20")
	version := sub.waitLine(t, "$SYS/broker/version", func(l string) bool { return strings.HasPrefix(l, "$SYS/broker/version ") })
	if want := "$SYS/broker/version gatewayd-conformance"; !strings.Contains(version, "gatewayd-conformance") {
		t.Errorf("got %q, want the version from Options.Version: %q", version, want)
	}
	// $SYS values are retained: the first one seen may predate both clients.
	sub.waitLine(t, "$SYS/broker/clients/connected with a count of at least 2 (mosquitto_sub itself and one other client)", func(l string) bool {
		v, ok := strings.CutPrefix(l, "$SYS/broker/clients/connected ")
		n, err := strconv.Atoi(v)
		return ok && err == nil && n >= 2
	})
}

// v5 properties set with mosquitto_pub -D reach a paho.golang subscriber,
// and a paho publisher's message reaches mosquitto_sub with its user
// properties (mosquitto_sub -F %P).
func TestInteropMosquittoV5Properties(t *testing.T) {
	b := startBroker(t, nil, broker.Options{})
	sub, _ := dialV5(t, b, &paho.Connect{ClientID: "paho-sub", CleanStart: true})
	sub.sub1(t, "interop/props", 1)
	mosquittoPub(t, b, "-V", "5", "-q", "1", "-t", "interop/props", "-m", "{}",
		"-D", "publish", "user-property", "site", "north",
		"-D", "publish", "content-type", "application/json",
		"-D", "publish", "response-topic", "interop/reply",
		"-D", "publish", "correlation-data", "c-42")
	m := sub.in.waitPayload(t, "{}")
	if m.Props == nil || m.Props.ContentType != "application/json" || m.Props.ResponseTopic != "interop/reply" ||
		string(m.Props.CorrelationData) != "c-42" || len(m.Props.User) != 1 || m.Props.User[0] != (paho.UserProperty{Key: "site", Value: "north"}) {
		t.Errorf("properties from mosquitto_pub arrived as %+v; want content type application/json, response topic interop/reply, correlation data c-42, user property site=north", m.Props)
	}

	ms := startMosquittoSubscribed(t, b, "-V", "5", "-t", "interop/back", "-C", "1", "-W", "20", "-F", "%t %P %p")
	pub, _ := dialV5(t, b, &paho.Connect{ClientID: "paho-pub", CleanStart: true})
	pub.pub(t, &paho.Publish{Topic: "interop/back", QoS: 1, Payload: []byte("from paho"),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "unit", Value: "7"}}}})
	line := ms.waitLine(t, "the message from paho", func(l string) bool { return strings.HasPrefix(l, "interop/back ") })
	if want := "interop/back unit:7 from paho"; line != want {
		t.Errorf("mosquitto_sub printed %q, want %q", line, want)
	}
	ms.waitExit(t)
}
