package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gatewayd/internal/testproc"
)

// scrapeMetric fetches http://addr/metrics and returns the value of name.
func scrapeMetric(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

func TestMetricsEndpointOfTheRunningGatewayd(t *testing.T) {
	dir := t.TempDir()
	addr, maddr := freeAddr(t), freeAddr(t)
	p := start(t, dir, nil, nil, "--config", writeConfig(t, dir, brokerConfig(dir, addr)+fmt.Sprintf("metrics:\n  address: %s\n", maddr)))
	p.waitListening()
	if v := scrapeMetric(t, maddr, "gatewayd_broker_clients_connected"); v != 0 {
		t.Errorf("clients connected %v before any client", v)
	}
	mqttConnect(t, addr, 4)
	if v := scrapeMetric(t, maddr, "gatewayd_broker_clients_connected"); v != 1 {
		t.Errorf("clients connected %v with one client", v)
	}
	if v := scrapeMetric(t, maddr, "gatewayd_broker_received_bytes_total"); v <= 0 {
		t.Errorf("received bytes %v after a CONNECT", v)
	}
	scrapeMetric(t, maddr, "gatewayd_store_fsyncs_total")
	scrapeMetric(t, maddr, "go_goroutines")
	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

func TestMetricsAddressInUseStopsStartWithTheKeyNamed(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	maddr := freeAddr(t)
	withMetrics := func(dir string) string {
		return writeConfig(t, dir, brokerConfig(dir, freeAddr(t))+"metrics:\n  address: "+maddr+"\n")
	}
	first := start(t, dir, nil, nil, "--config", withMetrics(dir))
	first.waitListening()
	second := start(t, other, nil, nil, "--config", withMetrics(other))
	if code := second.exitCode(); code != 1 {
		t.Errorf("exit %d, want 1; stderr:\n%s", code, second.stderr.String())
	}
	if !strings.Contains(second.stderr.String(), "change metrics.address") {
		t.Errorf("stderr does not name metrics.address:\n%s", second.stderr.String())
	}
	first.signal(syscall.SIGTERM)
	if code := first.exitCode(); code != 0 {
		t.Errorf("first gatewayd: exit %d", code)
	}
}

// PUBLISH counts and payload bytes by QoS, end to end: mosquitto_pub sends a
// chosen number of messages of chosen sizes at each QoS, one mosquitto_sub
// subscribed at QoS 2 receives them all (so each is delivered at the QoS it
// was published with), and the real gatewayd's /metrics and $SYS topics show
// exactly those counts.
func TestMetricsCountPublishesByQoS(t *testing.T) {
	pub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not installed (make test installs mosquitto-clients)")
	}
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed (make test installs mosquitto-clients)")
	}
	dir := t.TempDir()
	addr, maddr := freeAddr(t), freeAddr(t)
	p := start(t, dir, nil, nil, "--config", writeConfig(t, dir, brokerConfig(dir, addr)+fmt.Sprintf("metrics:\n  address: %s\n", maddr)))
	p.waitListening()
	host, port, _ := net.SplitHostPort(addr)

	// Per QoS: how many messages, and their payloads' sizes.
	counts := [3]int{3, 5, 7}
	sizes := [3]int{1, 10, 100}
	total := counts[0] + counts[1] + counts[2]

	subsBefore := scrapeMetric(t, maddr, "gatewayd_broker_subscriptions")
	var subOut, subErr testproc.Buffer
	ms := exec.Command(sub, "-h", host, "-p", port, "-q", "2", "-t", "qos/#", "-C", strconv.Itoa(total), "-W", "60")
	ms.Stdout, ms.Stderr = &subOut, &subErr
	if err := ms.Start(); err != nil {
		t.Fatal(err)
	}
	subDone := make(chan error, 1)
	go func() { subDone <- ms.Wait() }()
	t.Cleanup(func() {
		ms.Process.Kill()
		<-subDone
	})
	for deadline := time.Now().Add(hangGuard); scrapeMetric(t, maddr, "gatewayd_broker_subscriptions") <= subsBefore; {
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto_sub did not subscribe: %s", subErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	for q := range 3 {
		// -l: each line of standard input is one message.
		lines := strings.Repeat(strings.Repeat(string(rune('a'+q)), sizes[q])+"\n", counts[q])
		mp := exec.Command(pub, "-h", host, "-p", port, "-q", strconv.Itoa(q), "-t", fmt.Sprintf("qos/%d", q), "-l")
		mp.Stdin = strings.NewReader(lines)
		if out, err := mp.CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub -q %d: %v\n%s", q, err, out)
		}
	}
	select {
	case err := <-subDone:
		subDone <- err
		if err != nil {
			t.Fatalf("mosquitto_sub: %v; received:\n%s\n%s", err, subOut.String(), subErr.String())
		}
	case <-time.After(hangGuard):
		t.Fatalf("mosquitto_sub did not receive %d messages; received:\n%s", total, subOut.String())
	}
	if n := strings.Count(subOut.String(), "\n"); n != total {
		t.Fatalf("mosquitto_sub printed %d messages, want %d:\n%s", n, total, subOut.String())
	}

	for q := range 3 {
		l := fmt.Sprintf(`{qos="%d"}`, q)
		n, b := float64(counts[q]), float64(counts[q]*sizes[q])
		for name, want := range map[string]float64{
			"gatewayd_broker_publish_messages_received_total" + l: n,
			"gatewayd_broker_publish_messages_sent_total" + l:     n,
			"gatewayd_broker_publish_received_bytes_total" + l:    b,
			"gatewayd_broker_publish_sent_bytes_total" + l:        b,
		} {
			if v := scrapeMetric(t, maddr, name); v != want {
				t.Errorf("%s = %v, want %v", name, v, want)
			}
		}
	}
	// The totals are the sums (no $SYS subscriber yet: the broker sent
	// nothing else).
	for _, name := range []string{"gatewayd_broker_publish_received_total", "gatewayd_broker_publish_sent_total"} {
		if v := scrapeMetric(t, maddr, name); v != float64(total) {
			t.Errorf("%s = %v, want %d", name, v, total)
		}
	}

	// $SYS: refreshed every second (sys_interval 1s), so read until each
	// value is the expected one. The values sent at QoS 0 are not checked
	// here: delivering $SYS messages to this subscriber adds to them.
	want := map[string]string{}
	bytesIn := 0
	for q := range 3 {
		name := fmt.Sprintf("qos%d", q)
		want["$SYS/broker/publish/messages/"+name+"/received"] = strconv.Itoa(counts[q])
		want["$SYS/broker/publish/bytes/"+name+"/received"] = strconv.Itoa(counts[q] * sizes[q])
		if q > 0 {
			want["$SYS/broker/publish/messages/"+name+"/sent"] = strconv.Itoa(counts[q])
			want["$SYS/broker/publish/bytes/"+name+"/sent"] = strconv.Itoa(counts[q] * sizes[q])
		}
		bytesIn += counts[q] * sizes[q]
	}
	want["$SYS/broker/publish/messages/received"] = strconv.Itoa(total)
	want["$SYS/broker/publish/bytes/received"] = strconv.Itoa(bytesIn)
	sys := exec.Command(sub, "-h", host, "-p", port, "-v", "-t", "$SYS/broker/publish/+/+", "-t", "$SYS/broker/publish/+/+/+")
	out, err := sys.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	defer func() {
		sys.Process.Kill()
		for range lines {
		}
		sys.Wait()
	}()
	last := map[string]string{}
	timeout := time.After(hangGuard)
	for len(want) > 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("mosquitto_sub on $SYS ended; still missing %v; last seen:\n%s", keys(want), dump(last))
			}
			topic, payload, _ := strings.Cut(line, " ")
			last[topic] = payload
			if w, ok := want[topic]; ok && w == payload {
				delete(want, topic)
			}
		case <-timeout:
			t.Fatalf("$SYS values not as expected: %v; last seen:\n%s", keys(want), dump(last))
		}
	}

	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}
