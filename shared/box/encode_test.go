package box

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"strconv"
	"testing"
	"time"
)

// refFingerprint is Fingerprint as first written (one hash write per field).
func refFingerprint(b Box) string {
	h := sha256.New()
	for _, s := range []string{
		b.ID, b.Name, b.TypeCode,
		strconv.FormatFloat(b.Latitude, 'g', -1, 64),
		strconv.FormatFloat(b.Longitude, 'g', -1, 64),
		b.ProjectID, b.UpdatedAt.UTC().Format(time.RFC3339Nano),
	} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12])
}

func checkEncodeAgrees(t *testing.T, b Box) {
	t.Helper()
	got, gerr := b.Encode()
	b.Schema = SchemaVersion
	want, werr := json.Marshal(b)
	if (gerr == nil) != (werr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("Encode(%+v)\n= %s, %v\nwant %s, %v", b, got, gerr, want, werr)
	}
	if f, w := b.Fingerprint(), refFingerprint(b); f != w {
		t.Fatalf("Fingerprint(%+v) = %s, want %s", b, f, w)
	}
}

var encodeCases = func() []Box {
	v := valid()
	cases := []Box{v, {}, {Schema: 7}}
	for _, s := range []string{"", "a\"b", `a\b`, "<tag>&", "\x00\x1f\x7f", "café", "\xff", "\u2028", "POP - 1", " x "} {
		c := v
		c.Name, c.TypeCode, c.ProjectID, c.RunID, c.ID = s, s, s, s, s
		cases = append(cases, c)
	}
	for _, f := range []float64{0, math.Copysign(0, -1), 1e-7, -1e-7, 1e-6, 1e21, 1e20, 123456789.123, -27.5766, 5e-324, math.MaxFloat64, math.NaN(), math.Inf(1)} {
		c := v
		c.Latitude, c.Longitude = f, -f
		cases = append(cases, c)
	}
	for _, tm := range []time.Time{
		{}, time.Date(2022, 8, 4, 19, 42, 7, 427e6, time.UTC), time.Date(2022, 8, 4, 19, 42, 7, 1, time.FixedZone("", -3*3600)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2022, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)), time.Date(2022, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600+30)),
		time.Date(2022, 1, 1, 0, 0, 0, 0, time.Local),
	} {
		c := v
		c.UpdatedAt = tm
		cases = append(cases, c)
	}
	return cases
}()

func TestEncodeIsJSONMarshal(t *testing.T) {
	for _, b := range encodeCases {
		checkEncodeAgrees(t, b)
	}
}

func FuzzEncodeIsJSONMarshal(f *testing.F) {
	f.Add("5da61d35493d9c0006665404", "POP - 1", "CTO", -27.5766, -48.5272, "p", int64(1659642127e9), 0, "r1")
	f.Add("", "<&>", "\xff", 1e-7, 1e21, "\u2028", int64(-9e18), 3600, "")
	f.Fuzz(func(t *testing.T, id, name, code string, lat, lng float64, project string, nanos int64, zone int, run string) {
		tm := time.Unix(0, nanos).In(time.FixedZone("", zone%(30*3600)))
		checkEncodeAgrees(t, Box{ID: id, Name: name, TypeCode: code, Latitude: lat, Longitude: lng, ProjectID: project, UpdatedAt: tm, RunID: run})
	})
}
