package topics

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The benchmark fleet: 100 sites × 100 devices × 10 channels, the shape of a
// gateway aggregating a building's sensors.
const (
	benchSites    = 100
	benchDevices  = 100
	benchChannels = 10
)

var benchChannelNames = [benchChannels]string{"temp", "hum", "co2", "pm25", "lux", "motion", "door", "power", "voltage", "rssi"}

func benchTopic(site, dev, ch int) string {
	return fmt.Sprintf("sensors/site%d/dev%d/%s", site, dev, benchChannelNames[ch])
}

// benchFilter draws a filter from a wildcard-heavy mix: dashboards watching a
// device or a channel across a site, rules engines on single channels,
// loggers and the cloud bridge on whole subtrees, and worker pools on shared
// subscriptions.
func benchFilter(rng *rand.Rand) string {
	s, d, c := rng.IntN(benchSites), rng.IntN(benchDevices), rng.IntN(benchChannels)
	ch := benchChannelNames[c]
	switch p := rng.IntN(1000); { // per mille of subscriptions
	case p < 400:
		return fmt.Sprintf("sensors/site%d/dev%d/%s", s, d, ch)
	case p < 600:
		return fmt.Sprintf("sensors/site%d/dev%d/+", s, d)
	case p < 750:
		return fmt.Sprintf("sensors/site%d/+/%s", s, ch)
	case p < 830:
		return fmt.Sprintf("sensors/site%d/dev%d/#", s, d)
	case p < 890:
		return fmt.Sprintf("sensors/+/dev%d/%s", d, ch)
	case p < 900:
		return fmt.Sprintf("sensors/site%d/#", s)
	case p < 901:
		return fmt.Sprintf("sensors/+/+/%s", ch)
	case p < 941:
		return fmt.Sprintf("$share/workers%d/sensors/site%d/+/+", rng.IntN(4), s)
	case p < 999 || rng.IntN(5) != 0:
		return fmt.Sprintf("$share/ingest/sensors/+/+/%s", ch)
	default: // about 20 whole-tree watchers: the bridge, a logger, debug clients
		return []string{"#", "sensors/#", "+/+/+/+", "$SYS/#"}[rng.IntN(4)]
	}
}

type benchSession struct{ id int }

func benchIndex(n int) (*Index[*benchSession, byte], *rand.Rand) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := NewIndex[*benchSession, byte]()
	sessions := make([]*benchSession, n/5) // about five subscriptions each
	for i := range sessions {
		sessions[i] = &benchSession{i}
	}
	for x.Len() < n {
		x.Subscribe(sessions[rng.IntN(len(sessions))], benchFilter(rng), 1)
	}
	return x, rng
}

func benchTopics(rng *rand.Rand) []string {
	topics := make([]string, 4096)
	for i := range topics {
		topics[i] = benchTopic(rng.IntN(benchSites), rng.IntN(benchDevices), rng.IntN(benchChannels))
	}
	return topics
}

func BenchmarkMatch100kSubscriptions(b *testing.B) {
	x, rng := benchIndex(100_000)
	topics := benchTopics(rng)
	dst := make([]Hit[*benchSession, byte], 0, 1024)
	groups, hits := 0, 0
	shared := func(string, string, []Hit[*benchSession, byte]) { groups++ }
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dst = x.Match(topics[i%len(topics)], dst[:0], shared)
		hits += len(dst)
	}
	b.ReportMetric(float64(hits)/float64(b.N), "hits/op")
	b.ReportMetric(float64(groups)/float64(b.N), "groups/op")
}

// BenchmarkMatch100kSubscriptionsParallel is the broker's real load: many
// connections publishing at once against one index.
func BenchmarkMatch100kSubscriptionsParallel(b *testing.B) {
	x, rng := benchIndex(100_000)
	topics := benchTopics(rng)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]Hit[*benchSession, byte], 0, 1024)
		shared := func(string, string, []Hit[*benchSession, byte]) {}
		i := 0
		for pb.Next() {
			dst = x.Match(topics[i%len(topics)], dst[:0], shared)
			i++
		}
	})
}

// BenchmarkSubscribe adds new sessions' subscriptions to an index already
// holding 100,000.
func BenchmarkSubscribe(b *testing.B) {
	x, rng := benchIndex(100_000)
	sessions := make([]*benchSession, b.N)
	filters := make([]string, b.N)
	for i := range sessions {
		sessions[i] = &benchSession{-i}
		filters[i] = benchFilter(rng)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x.Subscribe(sessions[i], filters[i], 1)
	}
}

// BenchmarkSubscribeUnsubscribe is session churn: a client connecting,
// subscribing and leaving.
func BenchmarkSubscribeUnsubscribe(b *testing.B) {
	x, rng := benchIndex(100_000)
	filters := make([]string, 4096)
	for i := range filters {
		filters[i] = benchFilter(rng)
	}
	s := &benchSession{-1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f := filters[i%len(filters)]
		x.Subscribe(s, f, 1)
		x.Unsubscribe(s, f)
	}
}

func BenchmarkRetainedMatch(b *testing.B) {
	r := NewRetained[[]byte]()
	payload := []byte("21.5")
	for s := range benchSites {
		for d := range benchDevices {
			for c := range benchChannels {
				r.Set(benchTopic(s, d, c), payload)
			}
		}
	}
	if r.Len() != 100_000 {
		b.Fatalf("Len = %d", r.Len())
	}
	for _, c := range []struct {
		name, filter string
		want         int
	}{
		{"exact", "sensors/site42/dev7/temp", 1},
		{"device", "sensors/site42/dev7/+", benchChannels},
		{"site-channel", "sensors/site42/+/temp", benchDevices},
		{"site", "sensors/site42/#", benchDevices*benchChannels + 0},
		{"fleet-channel", "sensors/+/+/temp", benchSites * benchDevices},
	} {
		b.Run(c.name, func(b *testing.B) {
			n := 0
			count := func(string, []byte) bool { n++; return true }
			b.ReportAllocs()
			for b.Loop() {
				n = 0
				r.Match(c.filter, count)
			}
			if n != c.want {
				b.Fatalf("Match(%q) found %d, want %d", c.filter, n, c.want)
			}
		})
	}
}
