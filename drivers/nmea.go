package drivers

// nmea: a GPS receiver on a serial port speaking NMEA 0183. The parser is
// hand-written and covers what a gateway needs to publish a position:
// GGA, RMC, GSA, GSV and VTG from the GPS, GLONASS, Galileo, BeiDou and
// multi-constellation talkers. A sentence whose checksum does not match is
// dropped and counted, never half-used.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gatewayd/config"
)

func init() {
	Register("nmea", openNMEA)
	RegisterCheck("nmea", checkNMEA)
}

// DefaultNMEABaud is the baud rate NMEA 0183 specifies, and what most GPS
// modules start at.
const DefaultNMEABaud = 9600

// nmeaSentence is one checked sentence split into its fields.
type nmeaSentence struct {
	Talker string   // "GP", "GN", "GL", "GA", "BD", "GB"
	Type   string   // "GGA", "RMC", ...
	Fields []string // the fields after the address field
}

var (
	errNMEAChecksum = errors.New("checksum mismatch")
	errNMEAFormat   = errors.New("malformed sentence")
	errNMEATalker   = errors.New("unsupported talker or sentence")
)

// nmeaTalkers are the talker ids of satellite systems this parser accepts.
// "GB" is the NMEA 4.10 spelling of BeiDou, "BD" the older one.
var nmeaTalkers = map[string]bool{"GP": true, "GN": true, "GL": true, "GA": true, "BD": true, "GB": true}

// parseNMEA checks a line such as "$GPGGA,...*47" and splits it. Leading and
// trailing white space (the CR LF) is ignored. A sentence must carry a
// checksum: the receivers this driver is for always send one, and a line
// without it is more likely a line cut by noise than a sentence without.
func parseNMEA(line string) (nmeaSentence, error) {
	line = strings.TrimSpace(line)
	if len(line) < 7 || (line[0] != '$' && line[0] != '!') {
		return nmeaSentence{}, fmt.Errorf("%w: %q", errNMEAFormat, clip(line))
	}
	star := strings.LastIndexByte(line, '*')
	if star < 0 || len(line)-star != 3 {
		return nmeaSentence{}, fmt.Errorf("%w: no checksum: %q", errNMEAFormat, clip(line))
	}
	want, err := strconv.ParseUint(line[star+1:], 16, 8)
	if err != nil {
		return nmeaSentence{}, fmt.Errorf("%w: checksum %q: %q", errNMEAFormat, line[star+1:], clip(line))
	}
	body := line[1:star]
	var sum byte
	for i := 0; i < len(body); i++ {
		sum ^= body[i]
	}
	if sum != byte(want) {
		return nmeaSentence{}, fmt.Errorf("%w: computed %02X, sentence says %02X: %q", errNMEAChecksum, sum, want, clip(line))
	}
	fields := strings.Split(body, ",")
	addr := fields[0]
	if len(addr) != 5 {
		return nmeaSentence{}, fmt.Errorf("%w: address %q", errNMEAFormat, addr)
	}
	s := nmeaSentence{Talker: addr[:2], Type: addr[2:], Fields: fields[1:]}
	if !nmeaTalkers[s.Talker] {
		return s, fmt.Errorf("%w: %s", errNMEATalker, addr)
	}
	return s, nil
}

// clip shortens a line quoted in an error message.
func clip(s string) string {
	if len(s) > 90 {
		return s[:90] + "..."
	}
	return s
}

// field returns field i, or "" when the sentence is shorter.
func (s nmeaSentence) field(i int) string {
	if i < len(s.Fields) {
		return strings.TrimSpace(s.Fields[i])
	}
	return ""
}

// nmeaFloat parses an optional decimal field: ok is false when it is empty.
func nmeaFloat(f string) (v float64, ok bool, err error) {
	if f == "" {
		return 0, false, nil
	}
	v, err = strconv.ParseFloat(f, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%w: number %q", errNMEAFormat, f)
	}
	return v, true, nil
}

// nmeaCoord converts ddmm.mmmm (latitude) or dddmm.mmmm (longitude) with
// its hemisphere letter to signed decimal degrees. ok is false when the
// field is empty (no fix).
func nmeaCoord(f, hemi string, maxDeg float64) (v float64, ok bool, err error) {
	if f == "" {
		return 0, false, nil
	}
	raw, err := strconv.ParseFloat(f, 64)
	if err != nil || raw < 0 {
		return 0, false, fmt.Errorf("%w: coordinate %q", errNMEAFormat, f)
	}
	deg := float64(int(raw / 100))
	min := raw - deg*100
	if min >= 60 {
		return 0, false, fmt.Errorf("%w: coordinate %q: minutes %v", errNMEAFormat, f, min)
	}
	v = deg + min/60
	if v > maxDeg {
		return 0, false, fmt.Errorf("%w: coordinate %q out of range", errNMEAFormat, f)
	}
	switch hemi {
	case "N", "E":
	case "S", "W":
		v = -v
	default:
		return 0, false, fmt.Errorf("%w: hemisphere %q", errNMEAFormat, hemi)
	}
	return v, true, nil
}

// gpsState is what the receiver has told us so far. Each value comes with
// whether it is known; a value that the latest sentence left empty (no fix)
// becomes unknown rather than keeping an old position.
type gpsState struct {
	Quality     int // GGA fix quality: 0 invalid, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning...
	HasQuality  bool
	Mode        int // GSA fix type: 1 none, 2 2D, 3 3D
	HasMode     bool
	Lat, Lon    float64
	HasPos      bool
	Alt         float64 // metres above mean sea level
	HasAlt      bool
	SpeedKmh    float64
	HasSpeed    bool
	Course      float64 // degrees true
	HasCourse   bool
	SatsUsed    int // from GGA
	HasSatsUsed bool
	GSAUsed     int // satellites listed in the current run of GSA sentences
	HasGSAUsed  bool
	InView      map[string]int // per talker, from GSV
	HDOP        float64
	HasHDOP     bool
	hdopGGA     bool // HDOP came from GGA, which wins over GSA
	RMCValid    bool // RMC status A
	HasRMC      bool
	gsaRun      bool // the previous sentence was a GSA: the next one adds to GSAUsed
}

// Fix is the 0/2/3 summary: 0 no fix, 2 two-dimensional, 3 three-dimensional.
// GSA says it directly; without GSA it is derived from GGA or RMC.
func (g *gpsState) Fix() int {
	// GGA and RMC come first in a set and GSA after them: a fix lost in this
	// set shows in GGA or RMC while GSA still tells the previous one.
	if g.HasQuality && g.Quality == 0 || !g.HasQuality && g.HasRMC && !g.RMCValid {
		return 0
	}
	switch {
	case g.HasMode:
		if g.Mode >= 2 {
			return g.Mode
		}
		return 0
	case g.HasQuality:
		if g.Quality == 0 {
			return 0
		}
		if g.HasAlt {
			return 3
		}
		return 2
	case g.HasRMC && g.RMCValid:
		return 2
	}
	return 0
}

// SatellitesInUse prefers GGA's count, falling back on the GSA lists.
func (g *gpsState) SatellitesInUse() (int, bool) {
	if g.HasSatsUsed {
		return g.SatsUsed, true
	}
	return g.GSAUsed, g.HasGSAUsed
}

// SatellitesInView sums the GSV counts of every constellation.
func (g *gpsState) SatellitesInView() (int, bool) {
	if len(g.InView) == 0 {
		return 0, false
	}
	n := 0
	for _, v := range g.InView {
		n += v
	}
	return n, true
}

const knotKmh = 1.852

// apply folds one sentence into the state. Unknown sentence types are
// ignored (nil error); a sentence whose fields do not parse changes nothing.
func (g *gpsState) apply(s nmeaSentence) error {
	var next gpsState = *g
	if s.Type != "GSA" {
		next.gsaRun = false
	}
	var err error
	switch s.Type {
	case "GGA":
		err = next.applyGGA(s)
	case "RMC":
		err = next.applyRMC(s)
	case "GSA":
		err = next.applyGSA(s)
	case "GSV":
		err = next.applyGSV(s)
	case "VTG":
		err = next.applyVTG(s)
	default:
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s%s: %w", s.Talker, s.Type, err)
	}
	*g = next
	return nil
}

func (g *gpsState) applyGGA(s nmeaSentence) error {
	// 0 time, 1 lat, 2 N/S, 3 lon, 4 E/W, 5 quality, 6 satellites, 7 hdop, 8 altitude, 9 M, ...
	if len(s.Fields) < 9 {
		return fmt.Errorf("%w: %d fields", errNMEAFormat, len(s.Fields))
	}
	q, hasQ, err := nmeaFloat(s.field(5))
	if err != nil {
		return err
	}
	lat, hasLat, err := nmeaCoord(s.field(1), s.field(2), 90)
	if err != nil {
		return err
	}
	lon, hasLon, err := nmeaCoord(s.field(3), s.field(4), 180)
	if err != nil {
		return err
	}
	sats, hasSats, err := nmeaFloat(s.field(6))
	if err != nil {
		return err
	}
	hdop, hasHDOP, err := nmeaFloat(s.field(7))
	if err != nil {
		return err
	}
	alt, hasAlt, err := nmeaFloat(s.field(8))
	if err != nil {
		return err
	}
	g.Quality, g.HasQuality = int(q), hasQ
	valid := hasQ && q > 0
	g.Lat, g.Lon, g.HasPos = lat, lon, valid && hasLat && hasLon
	g.Alt, g.HasAlt = alt, valid && hasAlt
	g.SatsUsed, g.HasSatsUsed = int(sats), hasSats
	if hasHDOP {
		g.HDOP, g.HasHDOP, g.hdopGGA = hdop, true, true
	}
	return nil
}

func (g *gpsState) applyRMC(s nmeaSentence) error {
	// 0 time, 1 status, 2 lat, 3 N/S, 4 lon, 5 E/W, 6 speed knots, 7 course, 8 date, ...
	if len(s.Fields) < 9 {
		return fmt.Errorf("%w: %d fields", errNMEAFormat, len(s.Fields))
	}
	status := s.field(1)
	if status != "A" && status != "V" {
		return fmt.Errorf("%w: status %q", errNMEAFormat, status)
	}
	lat, hasLat, err := nmeaCoord(s.field(2), s.field(3), 90)
	if err != nil {
		return err
	}
	lon, hasLon, err := nmeaCoord(s.field(4), s.field(5), 180)
	if err != nil {
		return err
	}
	kn, hasSpeed, err := nmeaFloat(s.field(6))
	if err != nil {
		return err
	}
	course, hasCourse, err := nmeaFloat(s.field(7))
	if err != nil {
		return err
	}
	valid := status == "A"
	g.HasRMC, g.RMCValid = true, valid
	if !valid {
		g.HasPos, g.HasSpeed, g.HasCourse = false, false, false
		return nil
	}
	if hasLat && hasLon {
		g.Lat, g.Lon, g.HasPos = lat, lon, true
	}
	g.SpeedKmh, g.HasSpeed = kn*knotKmh, hasSpeed
	g.Course, g.HasCourse = course, hasCourse
	return nil
}

func (g *gpsState) applyGSA(s nmeaSentence) error {
	// 0 A/M, 1 fix type, 2..13 satellite ids, 14 PDOP, 15 HDOP, 16 VDOP [, 17 system id]
	if len(s.Fields) < 17 {
		return fmt.Errorf("%w: %d fields", errNMEAFormat, len(s.Fields))
	}
	mode, hasMode, err := nmeaFloat(s.field(1))
	if err != nil {
		return err
	}
	hdop, hasHDOP, err := nmeaFloat(s.field(15))
	if err != nil {
		return err
	}
	used := 0
	for i := 2; i <= 13; i++ {
		if s.field(i) != "" {
			used++
		}
	}
	if hasMode {
		g.Mode, g.HasMode = int(mode), true
	}
	// A receiver using several constellations sends one GSA per system in a
	// row; their lists add up.
	if g.gsaRun {
		g.GSAUsed += used
	} else {
		g.GSAUsed = used
	}
	g.HasGSAUsed = true
	g.gsaRun = true
	if hasHDOP && !g.hdopGGA {
		g.HDOP, g.HasHDOP = hdop, true
	}
	return nil
}

func (g *gpsState) applyGSV(s nmeaSentence) error {
	// 0 number of messages, 1 message number, 2 satellites in view, then 4 fields per satellite
	if len(s.Fields) < 3 {
		return fmt.Errorf("%w: %d fields", errNMEAFormat, len(s.Fields))
	}
	n, ok, err := nmeaFloat(s.field(2))
	if err != nil {
		return err
	}
	if !ok {
		return nil
	}
	m := make(map[string]int, len(g.InView)+1)
	for k, v := range g.InView {
		m[k] = v
	}
	m[s.Talker] = int(n)
	g.InView = m
	return nil
}

func (g *gpsState) applyVTG(s nmeaSentence) error {
	// NMEA 2.3+: 0 course true, 1 T, 2 course magnetic, 3 M, 4 knots, 5 N, 6 km/h, 7 K [, 8 mode]
	// Before NMEA 2.0 the unit letters were absent: 0 true, 1 magnetic, 2 knots, 3 km/h.
	var courseF, kmhF, knotsF string
	switch {
	case len(s.Fields) >= 8 && s.field(1) == "T":
		courseF, knotsF, kmhF = s.field(0), s.field(4), s.field(6)
	case len(s.Fields) == 4:
		courseF, knotsF, kmhF = s.field(0), s.field(2), s.field(3)
	default:
		return fmt.Errorf("%w: %d fields", errNMEAFormat, len(s.Fields))
	}
	if len(s.Fields) >= 9 && s.field(8) == "N" { // mode N: data not valid
		g.HasSpeed, g.HasCourse = false, false
		return nil
	}
	course, hasCourse, err := nmeaFloat(courseF)
	if err != nil {
		return err
	}
	kmh, hasKmh, err := nmeaFloat(kmhF)
	if err != nil {
		return err
	}
	if !hasKmh {
		kn, hasKn, err := nmeaFloat(knotsF)
		if err != nil {
			return err
		}
		kmh, hasKmh = kn*knotKmh, hasKn
	}
	if hasKmh {
		g.SpeedKmh, g.HasSpeed = kmh, true
	}
	if hasCourse {
		g.Course, g.HasCourse = course, true
	}
	return nil
}

// nmeaEpoch tells when the receiver has finished one set of sentences (one
// fix, typically once a second). A set ends when a GGA or RMC either carries
// a different time of day, or repeats a type already seen in the set: what
// came before it is then complete, with the GSA and GSV that followed it.
type nmeaEpoch struct {
	time    string
	seen    map[string]bool
	started bool
}

// next reports whether sentence s starts a new set, which means the previous
// one is complete. Only GGA and RMC, which carry the time, mark sets.
func (e *nmeaEpoch) next(s nmeaSentence) (completed bool) {
	if s.Type != "GGA" && s.Type != "RMC" {
		return false
	}
	t := s.field(0)
	if e.seen == nil {
		e.seen = make(map[string]bool, 2)
	}
	if e.started && (t != e.time || e.seen[s.Type]) {
		completed = true
		clear(e.seen)
	}
	e.started = true
	e.time = t
	e.seen[s.Type] = true
	return completed
}

// nmeaDevice is an nmea device: a Source publishing one set of readings per
// completed fix set, at most once per interval (zero: every fix set, which
// is once a second for most receivers).
type nmeaDevice struct {
	cfg      DeviceConfig
	env      Env
	interval time.Duration

	badChecksums atomic.Uint64 // sentences dropped for their checksum
	malformed    atomic.Uint64 // sentences dropped for their content
}

func openNMEA(cfg DeviceConfig, env Env) (Device, error) {
	if err := checkNMEA(&cfg); err != nil {
		return nil, err
	}
	return &nmeaDevice{cfg: cfg, env: env, interval: cfg.Interval}, nil
}

func checkNMEA(cfg *DeviceConfig) error {
	if cfg.Port == "" {
		return config.Errorf("port", "port is required (/dev/ttyUSB0, /dev/ttyACM0, serial0)")
	}
	return nil
}

// NMEA channel names.
const (
	nmeaFix          = "fix"
	nmeaFixQuality   = "fix_quality"
	nmeaLatitude     = "latitude"
	nmeaLongitude    = "longitude"
	nmeaAltitude     = "altitude"
	nmeaSpeed        = "speed"
	nmeaCourse       = "course"
	nmeaSatellites   = "satellites"
	nmeaInView       = "satellites_in_view"
	nmeaHDOP         = "hdop"
	nmeaBadChecksums = "checksum_errors"
)

func (d *nmeaDevice) Channels() []ChannelInfo {
	m := func(ch, unit, class string, prec int) ChannelInfo {
		return ChannelInfo{Channel: ch, Unit: unit, DeviceClass: class, StateClass: "measurement", Component: ComponentSensor, Precision: prec}
	}
	return []ChannelInfo{
		m(nmeaFix, "", "", 0),
		m(nmeaFixQuality, "", "", 0),
		m(nmeaLatitude, "°", "", 6),
		m(nmeaLongitude, "°", "", 6),
		m(nmeaAltitude, "m", "distance", 1),
		m(nmeaSpeed, "km/h", "speed", 1),
		m(nmeaCourse, "°", "", 1),
		m(nmeaSatellites, "", "", 0),
		m(nmeaInView, "", "", 0),
		m(nmeaHDOP, "", "", 1),
		{Channel: nmeaBadChecksums, StateClass: "total_increasing", Component: ComponentSensor, Precision: 0},
	}
}

func (d *nmeaDevice) Close() error { return nil }

// BadChecksums is the number of sentences dropped because their checksum
// did not match, since the device was opened.
func (d *nmeaDevice) BadChecksums() uint64 { return d.badChecksums.Load() }

// Malformed is the number of sentences with a good checksum whose fields did
// not parse.
func (d *nmeaDevice) Malformed() uint64 { return d.malformed.Load() }

// Run reads sentences until ctx ends or the port goes away (an error: the
// Runner calls Run again, which opens the port again). Each fix set is
// published when the next one starts.
func (d *nmeaDevice) Run(ctx context.Context, emit func(Reading)) error {
	port, err := openSerial(&d.cfg, d.env, DefaultNMEABaud)
	if err != nil {
		return err
	}
	if d.env.Up != nil {
		d.env.Up()
	}
	var (
		st    gpsState
		epoch nmeaEpoch
		last  time.Time
	)
	return readLines(ctx, port, func(line []byte, tooLong bool) {
		if len(line) == 0 {
			return
		}
		s, err := parseNMEA(string(line))
		switch {
		case errors.Is(err, errNMEAChecksum):
			d.badChecksums.Add(1)
			d.env.Logger.Debug("sentence dropped", "err", err)
			return
		case errors.Is(err, errNMEATalker):
			return // another talker (AIS, a proprietary $P sentence): not ours
		case err != nil || tooLong:
			d.malformed.Add(1)
			d.env.Logger.Debug("sentence dropped", "err", err)
			return
		}
		if epoch.next(s) {
			now := time.Now()
			if d.interval <= 0 || last.IsZero() || now.Sub(last) >= d.interval {
				last = now
				for _, rd := range d.readings(&st, now) {
					emit(rd)
				}
			}
		}
		if err := st.apply(s); err != nil {
			d.malformed.Add(1)
			d.env.Logger.Debug("sentence dropped", "err", err)
		}
	})
}

// readings is one fix set as published: position values only with a fix.
func (d *nmeaDevice) readings(st *gpsState, now time.Time) []Reading {
	out := make([]Reading, 0, 11)
	add := func(ch string, v float64, unit string) {
		out = append(out, Reading{Channel: ch, Value: v, Unit: unit, Time: now})
	}
	fix := st.Fix()
	add(nmeaFix, float64(fix), "")
	if st.HasQuality {
		add(nmeaFixQuality, float64(st.Quality), "")
	}
	if fix > 0 && st.HasPos {
		add(nmeaLatitude, st.Lat, "°")
		add(nmeaLongitude, st.Lon, "°")
	}
	if fix > 0 && st.HasAlt {
		add(nmeaAltitude, st.Alt, "m")
	}
	if fix > 0 && st.HasSpeed {
		add(nmeaSpeed, st.SpeedKmh, "km/h")
	}
	if fix > 0 && st.HasCourse {
		add(nmeaCourse, st.Course, "°")
	}
	if n, ok := st.SatellitesInUse(); ok {
		add(nmeaSatellites, float64(n), "")
	}
	if n, ok := st.SatellitesInView(); ok {
		add(nmeaInView, float64(n), "")
	}
	if st.HasHDOP {
		add(nmeaHDOP, st.HDOP, "")
	}
	add(nmeaBadChecksums, float64(d.badChecksums.Load()), "")
	return out
}
