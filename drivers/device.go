package drivers

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"gatewayd/broker/client"
)

// deviceRun is one device's life: its MQTT client, the hardware, the loop
// that reads or listens, and its counters.
type deviceRun struct {
	r     *Runner
	cfg   DeviceConfig
	topic string
	log   *slog.Logger

	mu         sync.Mutex
	stats      DeviceStats
	healthy    bool
	cl         *client.Client
	infos      map[string]ChannelInfo
	out        Output
	lostAt     *time.Timer // applies the safe state after safe_after without broker
	outMu      sync.Mutex  // serialises Set calls
	closing    bool        // under outMu: no command after the shutdown's safe state
	stopped    bool        // under mu: no more safe-state timers
	lastStatus string      // under mu: the availability last published
}

func (d *deviceRun) statusTopic() string { return d.topic + "/status" }

func (d *deviceRun) run(ctx context.Context) {
	cl, err := d.r.newClient(d.r.ClientID(d.cfg.Name), d.statusTopic(), d.onConnection)
	if err != nil {
		d.fail("client", err)
		return
	}
	d.mu.Lock()
	d.cl = cl
	d.mu.Unlock()

	// The broker connection and the hardware are brought up together: an
	// output takes its initial state, and its safe state after safe_after,
	// even when the broker never comes; a device whose hardware is missing
	// still says offline.
	connected := make(chan error, 1)
	go func() { connected <- cl.Connect(ctx) }()
	dev := d.open(ctx, true)
	if dev == nil {
		if <-connected == nil {
			d.shutdown(cl)
		}
		return
	}
	cur := dev // the sensor loop may reopen it
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	out, isOut := dev.(Output)
	if isOut {
		d.mu.Lock()
		d.out = out
		d.mu.Unlock()
		if cl.State() != client.StateConnected {
			d.armSafeTimer()
		}
	}
	if err := <-connected; err != nil {
		d.applySafe("shutdown")
		d.stopSafeTimer()
		return // ctx ended
	}
	defer d.shutdown(cl)

	var wg sync.WaitGroup
	if isOut {
		d.startOutput(ctx, cl, out)
	}
	if src, ok := dev.(Source); ok {
		wg.Go(func() { d.runSource(ctx, src) })
	}
	_, isSource := dev.(Source)
	if s, ok := dev.(Sensor); ok {
		wg.Go(func() {
			// A sensor alone on its device is opened again after
			// reopenAfter failed reads in a row: a sensor that lost power
			// comes back unconfigured (an SCD4x out of periodic mode).
			reopen := !isOut && !isSource
			for d.runSensor(ctx, s, reopen) {
				d.log.Info("reopening after repeated read failures")
				cur.Close()
				cur = d.open(ctx, false)
				if cur == nil {
					return
				}
				if s, ok = cur.(Sensor); !ok {
					return
				}
			}
		})
	}
	wg.Wait()
	<-ctx.Done()
	d.applySafe("shutdown")
}

// open opens the hardware, retrying with backoff until it succeeds or ctx
// ends (nil). The first time, success marks the device online, except a
// Source, which opens what it listens to in Run and is online from then
// (Env.Up) or from its first reading; a sensor opened again stays offline
// until it reads.
func (d *deviceRun) open(ctx context.Context, first bool) Device {
	for n := 0; ; n++ {
		dev, err := Open(d.cfg, Env{Hardware: d.r.hw, Logger: d.log, Up: func() { d.succeed(false) }})
		if err == nil {
			d.setInfos(dev.Channels())
			if _, src := dev.(Source); first && !src {
				d.succeed(false)
			}
			if d.r.disc != nil && !d.cfg.HomeAssistant.Disabled {
				d.r.disc.announce(d)
			}
			return dev
		}
		d.fail("open", err)
		if !sleep(ctx, backoff(d.interval(), n)) {
			return nil
		}
	}
}

func (d *deviceRun) interval() time.Duration {
	if d.cfg.Interval > 0 {
		return d.cfg.Interval
	}
	return DefaultInterval
}

func (d *deviceRun) setInfos(infos []ChannelInfo) {
	m := make(map[string]ChannelInfo, len(infos))
	for _, in := range infos {
		m[in.Channel] = in
	}
	d.mu.Lock()
	d.infos = m
	d.mu.Unlock()
}

// channels returns the device's channels with the configuration applied,
// leaving out disabled ones.
func (d *deviceRun) channels() []ChannelInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []ChannelInfo
	for _, in := range d.infos {
		if c, ok := d.cfg.Channels[in.Channel]; ok {
			if c.Disabled {
				continue
			}
			in.Unit = cmpOr(c.Unit, in.Unit)
			in.Name = cmpOr(c.Name, in.Name)
			in.DeviceClass = cmpOr(c.DeviceClass, in.DeviceClass)
			in.StateClass = cmpOr(c.StateClass, in.StateClass)
			if c.Precision != nil {
				in.Precision = *c.Precision
			}
		}
		out = append(out, in)
	}
	sortInfos(out)
	return out
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// reopenAfter is how many reads in a row must fail before a sensor is
// opened again.
const reopenAfter = 3

// runSensor reads s every interval until ctx ends (false), or, when
// reopen, until reopenAfter reads in a row failed (true: open it again).
func (d *deviceRun) runSensor(ctx context.Context, s Sensor, reopen bool) bool {
	fails := 0
	for {
		rds, err := s.Read(ctx)
		if ctx.Err() != nil {
			return false
		}
		wait := d.interval()
		if err != nil {
			d.fail("read", err)
			wait = backoff(d.interval(), fails)
			fails++
			if reopen && fails >= reopenAfter {
				return sleep(ctx, wait)
			}
		} else {
			fails = 0
			d.succeed(len(rds) > 0)
			d.learn(s, rds)
			for _, rd := range rds {
				d.publish(rd)
			}
		}
		if !sleep(ctx, wait) {
			return false
		}
	}
}

// runSource runs s, and again after a backoff each time it fails: the
// device is online from a reading on, offline from a failure on.
func (d *deviceRun) runSource(ctx context.Context, s Source) {
	for n := 0; ; n++ {
		err := s.Run(ctx, func(rd Reading) {
			d.succeed(true)
			d.publish(rd)
		})
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stopped")
		}
		d.fail("run", err)
		if !sleep(ctx, backoff(time.Second, n)) {
			return
		}
	}
}

// learn takes in the channels dev found after it was opened (a sensor wired
// to its bus since), when rds has a channel not known: their settings
// (precision) apply and they are announced to Home Assistant.
func (d *deviceRun) learn(dev Device, rds []Reading) {
	if !anyUnknownOf(d, rds, func(rd Reading) string { return rd.Channel }) {
		return
	}
	infos := dev.Channels()
	if !anyUnknownOf(d, infos, func(in ChannelInfo) string { return in.Channel }) {
		return // a channel the driver does not list: published as it comes
	}
	d.setInfos(infos)
	if d.r.disc != nil && !d.cfg.HomeAssistant.Disabled {
		d.r.disc.announce(d)
	}
}

// anyUnknownOf reports whether a channel of xs is not among d's channels.
func anyUnknownOf[T any](d *deviceRun, xs []T, channel func(T) string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.ContainsFunc(xs, func(x T) bool {
		_, ok := d.infos[channel(x)]
		return !ok
	})
}

// succeed marks the device healthy (publishing online if it was not) and, if
// counted, counts a read.
func (d *deviceRun) succeed(counted bool) {
	d.mu.Lock()
	was := d.healthy
	d.healthy = true
	if counted {
		d.stats.Reads++
		d.stats.LastSuccess = time.Now()
	}
	d.stats.Online = true
	cl := d.cl
	change := !was || d.lastStatus != Online
	d.lastStatus = Online
	d.mu.Unlock()
	if change && cl != nil {
		d.publishStatus(cl, Online)
	}
}

// fail counts an error and marks the device offline.
func (d *deviceRun) fail(op string, err error) {
	d.log.Warn("device "+op+" failed", "err", err)
	d.mu.Lock()
	was := d.healthy
	d.healthy = false
	d.stats.Errors++
	d.stats.Online = false
	d.stats.LastError = op + ": " + err.Error()
	cl := d.cl
	change := was || d.lastStatus != Offline
	d.lastStatus = Offline
	d.mu.Unlock()
	if cl != nil && change {
		d.publishStatus(cl, Offline)
	}
}

func (d *deviceRun) publishStatus(cl *client.Client, s string) {
	cl.PublishAsync(&client.Message{Topic: d.statusTopic(), Payload: []byte(s), QoS: 1, Retain: true}, d.logErr)
}

func (d *deviceRun) logErr(err error) {
	if err != nil && !errors.Is(err, client.ErrClosed) {
		d.log.Debug("publish failed", "err", err)
	}
}

// publish sends one reading to <topic>/<channel> after the channel's
// settings.
func (d *deviceRun) publish(rd Reading) {
	c := d.cfg.Channels[rd.Channel]
	if c.Disabled {
		return
	}
	d.mu.Lock()
	in, known := d.infos[rd.Channel]
	cl := d.cl
	d.mu.Unlock()
	prec := -1
	if known {
		prec = in.Precision
	}
	if c.Precision != nil {
		prec = *c.Precision
	}
	if !rd.IsText {
		if c.Scale != nil {
			rd.Value *= *c.Scale
		}
		rd.Value += c.Offset
	}
	unit := cmpOr(c.Unit, rd.Unit)
	payload := format(d.r.cfg.Payload, rd, unit, prec)
	cl.PublishAsync(&client.Message{Topic: d.topic + "/" + rd.Channel, Payload: payload, QoS: 1, Retain: rd.Retain}, d.logErr)
}

// onConnection tracks the broker connection: on (re)connection it publishes
// the availability again (the will may have said offline meanwhile); on loss
// it arms the output's safe-state timer.
func (d *deviceRun) onConnection(s client.State, err error) {
	switch s {
	case client.StateConnected:
		d.stopSafeTimer()
		d.mu.Lock()
		cl, healthy := d.cl, d.healthy
		d.lastStatus = Offline
		if healthy {
			d.lastStatus = Online
		}
		d.mu.Unlock()
		if cl != nil {
			st := Offline
			if healthy {
				st = Online
			}
			d.publishStatus(cl, st)
		}
	case client.StateDisconnected:
		d.armSafeTimer()
	}
}

// startOutput subscribes to <topic>/set, then publishes the output's state
// (so a state seen means commands are listened to).
func (d *deviceRun) startOutput(ctx context.Context, cl *client.Client, out Output) {
	h := func(m *client.Message) {
		if m.Retain {
			return // a stale retained command must not flip an output at start
		}
		cmd := strings.TrimSpace(string(m.Payload))
		d.outMu.Lock()
		closing := d.closing
		var st string
		var err error
		if !closing {
			st, err = out.Set(ctx, cmd)
		}
		d.outMu.Unlock()
		if closing {
			return
		}
		if err != nil {
			d.log.Warn("command refused", "command", cmd, "err", err)
			d.mu.Lock()
			d.stats.Errors++
			d.stats.LastError = "set " + cmd + ": " + err.Error()
			d.mu.Unlock()
			return
		}
		d.mu.Lock()
		d.stats.Reads++
		d.stats.LastSuccess = time.Now()
		d.mu.Unlock()
		d.publishState(out, st)
	}
	for n := 0; ; n++ {
		_, err := cl.Subscribe(ctx, h, client.Subscription{Filter: d.topic + "/set", QoS: 1})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("subscribe failed", "topic", d.topic+"/set", "err", err)
		if !sleep(ctx, backoff(time.Second, n)) {
			return
		}
	}
	d.outMu.Lock()
	st, err := out.State(ctx)
	d.outMu.Unlock()
	if err != nil {
		d.fail("state", err)
		return
	}
	d.succeed(false)
	d.publishState(out, st)
}

func (d *deviceRun) publishState(out Output, st string) {
	d.publish(Reading{Channel: out.StateChannel(), Text: st, IsText: true, Retain: true, Time: time.Now()})
}

func (d *deviceRun) safeAfter() time.Duration {
	if d.cfg.SafeAfter > 0 {
		return d.cfg.SafeAfter
	}
	return DefaultSafeAfter
}

func (d *deviceRun) armSafeTimer() {
	if d.cfg.SafeState == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lostAt != nil || d.stopped {
		return
	}
	d.lostAt = time.AfterFunc(d.safeAfter(), func() { d.applySafe("broker unreachable") })
}

func (d *deviceRun) stopSafeTimer() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lostAt != nil {
		d.lostAt.Stop()
		d.lostAt = nil
	}
}

// applySafe puts an output in its safe state.
func (d *deviceRun) applySafe(why string) {
	d.mu.Lock()
	out := d.out
	d.lostAt = nil
	d.mu.Unlock()
	if out == nil || d.cfg.SafeState == "" {
		return
	}
	d.outMu.Lock()
	defer d.outMu.Unlock()
	if d.closing {
		return
	}
	if why == "shutdown" {
		d.closing = true // no command after this one
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := out.Set(ctx, d.cfg.SafeState)
	if err != nil {
		d.log.Error("safe state not applied", "why", why, "err", err)
		return
	}
	d.log.Info("safe state applied", "why", why, "state", st)
	d.publishState(out, st)
}

// shutdown publishes offline and disconnects.
func (d *deviceRun) shutdown(cl *client.Client) {
	d.stopSafeTimer()
	d.mu.Lock()
	d.stopped = true
	d.healthy = false
	d.stats.Online = false
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = cl.Publish(ctx, &client.Message{Topic: d.statusTopic(), Payload: []byte(Offline), QoS: 1, Retain: true})
	_ = cl.Disconnect(ctx)
}
