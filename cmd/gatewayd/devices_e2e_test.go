package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gatewayd/internal/testproc"

	"github.com/creack/pty"
)

// End to end: the real gatewayd binary with a configuration of devices that
// need no sensor hardware publishes what an external mosquitto_sub receives.
//
// The devices go through the real board and the real drivers, not a
// test-only board: the system device reads the host's /proc and /sys, and the
// nmea and serial-line devices open pseudo-terminals the test creates and
// writes sentences to, the same kernel tty path a USB or UART serial port
// takes. gatewayd's board is rooted at "/", so a ds18b20 on a fake 1-Wire
// tree is not part of this test (drivers' tests cover it on a fake tree).
func TestDevicesEndToEndMosquittoSubReceivesReadings(t *testing.T) {
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed (make test installs mosquitto-clients)")
	}
	gps := openPTY(t)
	weather := openPTY(t)

	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := brokerConfig(dir, addr) + fmt.Sprintf(`homeassistant:
  enabled: true
devices:
  - {name: system, driver: system, interval: 1s}
  - {name: gps, driver: nmea, port: %s, baud: 9600, interval: 0s}
  - {name: weather, driver: serial-line, port: %s, baud: 115200, fields: [temperature, humidity]}
`, gps.Name(), weather.Name())
	p := start(t, dir, nil, nil, "--config", writeConfig(t, dir, cfg))
	p.waitListening()

	// The sentences are written again and again until the test ends: when
	// gatewayd opens the ports is not the test's business. The GGA sentence
	// is NMEA 0183's own example (48°07.038' N, 11°31.000' E); a fix set is
	// published when the next epoch starts, so two epochs alternate.
	gga := func(utc string) string {
		return nmeaSentence("GPGGA," + utc + ",4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")
	}
	stopWriting := make(chan struct{})
	var writers sync.WaitGroup
	writers.Go(func() {
		for i := 0; ; i++ {
			gps.master.Write([]byte(gga(fmt.Sprintf("1235%02d", i%60)) + "\r\n"))
			weather.master.Write([]byte("21.5,40.2\n"))
			select {
			case <-stopWriting:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() { close(stopWriting); writers.Wait() })

	host, port, _ := net.SplitHostPort(addr)
	ms := exec.Command(sub, "-h", host, "-p", port, "-t", "gatewayd/#", "-t", "homeassistant/#", "-v")
	out, err := ms.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var msErr testproc.Buffer
	ms.Stderr = &msErr
	if err := ms.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Process.Kill(); ms.Wait() })
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	const base = "gatewayd/gw-test/"
	num := func(want, tol float64) func(string) bool {
		return func(v string) bool {
			f, err := strconv.ParseFloat(v, 64)
			return err == nil && math.Abs(f-want) <= tol
		}
	}
	anyNum := func(v string) bool { _, err := strconv.ParseFloat(v, 64); return err == nil }
	is := func(want string) func(string) bool { return func(v string) bool { return v == want } }
	has := func(subs ...string) func(string) bool {
		return func(v string) bool {
			for _, s := range subs {
				if !strings.Contains(v, s) {
					return false
				}
			}
			return true
		}
	}
	want := map[string]func(string) bool{
		base + "system/status":       is("online"),
		base + "system/memory_used":  anyNum,
		base + "system/uptime":       anyNum,
		base + "gps/status":          is("online"),
		base + "gps/latitude":        num(48+7.038/60, 1e-5),
		base + "gps/longitude":       num(11+31.0/60, 1e-5),
		base + "gps/altitude":        num(545.4, 1e-9),
		base + "gps/satellites":      is("8"),
		base + "gps/fix":             is("3"), // GGA with an altitude: a 3D fix
		base + "gps/fix_quality":     is("1"),
		base + "weather/status":      is("online"),
		base + "weather/temperature": is("21.5"),
		base + "weather/humidity":    is("40.2"),
		"homeassistant/sensor/gw-test/gps_latitude/config": has(`"state_topic":"`+base+`gps/latitude"`, `"unit_of_measurement":"°"`,
			`"availability_topic":"`+base+`gps/status"`),
		"homeassistant/sensor/gw-test/weather_temperature/config": has(`"state_topic":"`+base+`weather/temperature"`,
			`"device_class":"temperature"`, `"state_class":"measurement"`, `"unit_of_measurement":"°C"`),
		"homeassistant/sensor/gw-test/system_memory_used/config": has(`"state_topic":"`+base+`system/memory_used"`, `"unit_of_measurement":"%"`),
	}
	last := map[string]string{}
	timeout := time.After(hangGuard)
	for len(want) > 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				ms.Wait()
				t.Fatalf("mosquitto_sub ended: %s\nstill missing %v", msErr.String(), keys(want))
			}
			topic, payload, _ := strings.Cut(line, " ")
			last[topic] = payload
			if ok := want[topic]; ok != nil && ok(payload) {
				delete(want, topic)
			}
		case <-timeout:
			t.Fatalf("mosquitto_sub did not receive %v; last payloads seen:\n%s\ngatewayd stderr:\n%s",
				keys(want), dump(last), p.stderr.String())
		}
	}

	p.signal(syscall.SIGTERM)
	if code := p.exitCode(); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, p.stderr.String())
	}
}

// ptyPort is a pseudo-terminal standing in for a serial device: gatewayd
// opens the slave by name, the test writes to the master.
type ptyPort struct {
	master, slave *os.File
}

func (p ptyPort) Name() string { return p.slave.Name() }

func openPTY(t *testing.T) ptyPort {
	t.Helper()
	m, s, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	// Until gatewayd puts the port in raw mode the line discipline echoes
	// what is written back to the master: drain it so writes never block.
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, m); close(done) }()
	t.Cleanup(func() {
		s.Close()
		m.Close()
		<-done
	})
	return ptyPort{master: m, slave: s}
}

// nmeaSentence frames body with $ and its checksum.
func nmeaSentence(body string) string {
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	return fmt.Sprintf("$%s*%02X", body, sum)
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func dump(m map[string]string) string {
	var b strings.Builder
	for k, v := range m {
		fmt.Fprintf(&b, "%s %s\n", k, v)
	}
	return b.String()
}
