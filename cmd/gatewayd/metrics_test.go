package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
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
