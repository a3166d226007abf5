package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"gatewayd/broker/client"
	"gatewayd/broker/packet"
)

// runStatus prints one screen about a running gatewayd from what it publishes
// over MQTT: $SYS/broker/... (version, uptime, clients, bridges) and the
// devices' status and reading topics (<prefix>/<gateway>/<device>/...).
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("status", stderr, "gatewayctl status [options]")
	var cf common
	cf.register(fs)
	prefix := fs.String("prefix", "gatewayd", "the devices' topic_prefix")
	wait := fs.Duration("w", time.Second, "how long to collect what the broker sends")
	pos, err := parse(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) > 0 {
		return usageError(fs, stderr, fmt.Errorf("unexpected argument %q", pos[0]))
	}
	devFilter := *prefix + "/+/+/#"
	if err := packet.ValidTopicFilter([]byte(devFilter)); err != nil {
		return usageError(fs, stderr, fmt.Errorf("-prefix %q: %v", *prefix, err))
	}
	o, err := cf.options(fmt.Sprintf("gatewayctl-status-%d", os.Getpid()))
	if err != nil {
		return usageError(fs, stderr, err)
	}
	c, code := connect(ctx, o, stderr, "status")
	if c == nil {
		return code
	}
	defer disconnect(c)

	var mu sync.Mutex
	sys := map[string]string{}
	type reading struct {
		topic, payload string
		at             time.Time
	}
	devStatus := map[string]string{} // gateway/device -> online/offline
	devLast := map[string]reading{}  // gateway/device -> last reading
	handler := func(m *client.Message) {
		mu.Lock()
		defer mu.Unlock()
		t, p := m.Topic, string(m.Payload)
		if rest, ok := strings.CutPrefix(t, "$SYS/broker/"); ok {
			sys[rest] = p
			return
		}
		levels := strings.Split(strings.TrimPrefix(t, *prefix+"/"), "/")
		if len(levels) < 3 {
			return
		}
		key := levels[0] + "/" + levels[1]
		if levels[2] == "status" && len(levels) == 3 {
			devStatus[key] = p
			return
		}
		devLast[key] = reading{t, p, time.Now()}
	}
	subs := []client.Subscription{{Filter: "$SYS/broker/#"}, {Filter: devFilter}}
	if _, err := c.Subscribe(ctx, handler, subs...); err != nil {
		fmt.Fprintf(stderr, "gatewayctl status: %v\n", err)
		return exitFailed
	}
	select {
	case <-time.After(*wait):
	case <-ctx.Done():
	}

	mu.Lock()
	defer mu.Unlock()
	if len(sys) == 0 {
		fmt.Fprintln(stderr, "gatewayctl status: no $SYS/broker topics received: not gatewayd, $SYS disabled (broker.sys_interval: 0s), or not allowed by the ACL")
		return exitFailed
	}
	target := cf.url
	if target == "" {
		port := cf.port
		if port == 0 {
			port = 1883
		}
		target = fmt.Sprintf("%s:%d", cf.host, port)
	}
	up := sys["uptime"]
	if s, ok := strings.CutSuffix(up, " seconds"); ok {
		if n, err := strconv.Atoi(s); err == nil {
			up = (time.Duration(n) * time.Second).String()
		}
	}
	or := func(k, def string) string {
		if v, ok := sys[k]; ok {
			return v
		}
		return def
	}
	fmt.Fprintf(stdout, "gatewayd %s at %s, up %s\n", or("version", "?"), target, or2(up, "?"))
	fmt.Fprintf(stdout, "clients    %s connected, %s offline sessions, %s at most\n",
		or("clients/connected", "?"), or("clients/disconnected", "?"), or("clients/maximum", "?"))
	fmt.Fprintf(stdout, "messages   %s received, %s sent, %s dropped; %s retained; %s queued; %s subscriptions\n",
		or("publish/messages/received", "?"), or("publish/messages/sent", "?"), or("publish/messages/dropped", "?"),
		or("retained messages/count", "?"), or("store/messages/count", "?"), or("subscriptions/count", "?"))

	bridges := map[string]bool{}
	for k := range sys {
		if rest, ok := strings.CutPrefix(k, "bridge/"); ok {
			name, _, _ := strings.Cut(rest, "/")
			bridges[name] = true
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	if len(bridges) == 0 {
		fmt.Fprintln(stdout, "bridges    none")
	} else {
		fmt.Fprintln(stdout, "bridges")
		for _, name := range sortedKeys(bridges) {
			b := func(leaf string) string { return or("bridge/"+name+"/"+leaf, "?") }
			fmt.Fprintf(tw, "  %s\t%s\t%s queued (oldest %ss)\t%s sent\t%s received\t%s reconnects\n",
				name, b("state"), b("queued/messages"), b("queued/oldest_age_seconds"), b("sent"), b("received"), b("reconnects"))
		}
		tw.Flush()
	}
	devs := map[string]bool{}
	for k := range devStatus {
		devs[k] = true
	}
	for k := range devLast {
		devs[k] = true
	}
	if len(devs) == 0 {
		fmt.Fprintf(stdout, "devices    none seen under %s/\n", *prefix)
		return exitOK
	}
	fmt.Fprintln(stdout, "devices")
	for _, k := range sortedKeys(devs) {
		st := devStatus[k]
		if st == "" {
			st = "?"
		}
		last := "no reading"
		if r, ok := devLast[k]; ok {
			last = r.topic + " = " + truncate(r.payload, 40)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", k, st, last)
	}
	tw.Flush()
	return exitOK
}

func or2(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
