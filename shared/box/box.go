// Package box defines the message the producer publishes for every eligible
// OZmap box and the consumer upserts into Sytex: its JSON schema, validation,
// subject and JetStream message id.
package box

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// SchemaVersion is the version of the message layout. A consumer refuses (and
// dead-letters) any other version rather than guessing at its meaning.
const SchemaVersion = 1

// MaxNameLen bounds a box name in runes. OZmap does not document a limit;
// Sytex stores names in a bounded column, so anything longer is refused
// before it reaches Sytex.
const MaxNameLen = 500

// MaxMessageBytes bounds a box message on the wire. A real message is a few
// hundred bytes; anything larger is hostile and is dead-lettered unparsed.
const MaxMessageBytes = 16 << 10

// Box is one OZmap box as it travels through the work stream.
type Box struct {
	Schema    int       `json:"schema"`
	ID        string    `json:"id"`                  // OZmap box id (24-hex ObjectId)
	Name      string    `json:"name"`                // the Sytex match key
	TypeCode  string    `json:"type_code,omitempty"` // OZmap box-type code ("CTO"); empty when the box has no type
	Latitude  float64   `json:"latitude"`
	Longitude float64   `json:"longitude"`
	ProjectID string    `json:"project_id,omitempty"`
	UpdatedAt time.Time `json:"updated_at"` // OZmap updatedAt
	RunID     string    `json:"run_id"`     // the sync run that published it
}

// ValidID reports whether id is a 24-character lowercase or uppercase hex
// ObjectId, which is what OZmap uses and what makes it safe as a subject token.
func ValidID(id string) bool {
	if len(id) != 24 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// Validate checks what Sytex needs and what the stream layout relies on. The
// error names the field and says what is wrong, because it ends up in a
// dead-letter header an operator reads.
func (b Box) Validate() error {
	var errs []error
	if b.Schema != SchemaVersion {
		errs = append(errs, fmt.Errorf("schema: version %d is not supported (want %d)", b.Schema, SchemaVersion))
	}
	if !ValidID(b.ID) {
		errs = append(errs, fmt.Errorf("id: %q is not a 24-hex OZmap id", truncate(b.ID, 40)))
	}
	switch {
	case b.Name == "" || isBlank(b.Name):
		errs = append(errs, errors.New("name: empty (give the box a name in OZmap)"))
	case !utf8.ValidString(b.Name):
		errs = append(errs, errors.New("name: not valid UTF-8"))
	case strings.TrimSpace(b.Name) != b.Name:
		errs = append(errs, fmt.Errorf("name: %q has leading or trailing spaces, which Sytex trims: the element could never be found by this name again (remove them in OZmap)", truncate(b.Name, 60)))
	case utf8.RuneCountInString(b.Name) > MaxNameLen:
		errs = append(errs, fmt.Errorf("name: %d characters, more than the %d allowed", utf8.RuneCountInString(b.Name), MaxNameLen))
	}
	if math.IsNaN(b.Latitude) || b.Latitude < -90 || b.Latitude > 90 {
		errs = append(errs, fmt.Errorf("latitude: %v is outside [-90, 90] (check the box's coordinates in OZmap)", b.Latitude))
	}
	if math.IsNaN(b.Longitude) || b.Longitude < -180 || b.Longitude > 180 {
		errs = append(errs, fmt.Errorf("longitude: %v is outside [-180, 180] (check the box's coordinates in OZmap)", b.Longitude))
	}
	if b.Latitude == 0 && b.Longitude == 0 {
		errs = append(errs, errors.New("coordinates: 0,0 is not a real location (the box has no coordinates in OZmap)"))
	}
	return errors.Join(errs...)
}

func isBlank(s string) bool { return len(bytes.TrimSpace([]byte(s))) == 0 }

// Subject is the work-stream subject of a box. One subject per box id (a safe
// token once ValidID holds) lets the stream keep only the latest version of
// each box (MaxMsgsPerSubject=1).
func Subject(prefix, id string) string { return prefix + "." + id }

// Fingerprint hashes the fields that Sytex receives or that say the box
// changed. The run id is left out on purpose: a rerun of an unchanged box must
// produce the same message id so JetStream drops it as a duplicate.
func (b Box) Fingerprint() string {
	// One buffer, one hash: the same bytes as writing each field and a
	// zero byte to the hash in turn.
	var arr [256]byte
	buf := arr[:0]
	buf = append(append(buf, b.ID...), 0)
	buf = append(append(buf, b.Name...), 0)
	buf = append(append(buf, b.TypeCode...), 0)
	buf = append(strconv.AppendFloat(buf, b.Latitude, 'g', -1, 64), 0)
	buf = append(strconv.AppendFloat(buf, b.Longitude, 'g', -1, 64), 0)
	buf = append(append(buf, b.ProjectID...), 0)
	buf = append(b.UpdatedAt.UTC().AppendFormat(buf, time.RFC3339Nano), 0)
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:12])
}

// MsgID is the Nats-Msg-Id of the box's message: the box id plus its content
// fingerprint, so a republish of unchanged content inside the stream's
// duplicates window is dropped, while a changed box always goes through.
func (b Box) MsgID() string { return b.ID + "-" + b.Fingerprint() }

// Encode returns the message body: the bytes json.Marshal makes of the box,
// written directly when every string is plain (see appendPlain), otherwise
// by json.Marshal itself.
func (b Box) Encode() ([]byte, error) {
	b.Schema = SchemaVersion
	if out, ok := b.appendJSON(make([]byte, 0, 256)); ok {
		return out, nil
	}
	return json.Marshal(b)
}

// appendJSON writes b as json.Marshal does; ok is false when a string needs
// escaping, a float is not finite, or the time is outside what
// time.Time.MarshalJSON accepts.
func (b *Box) appendJSON(out []byte) ([]byte, bool) {
	ok := true
	str := func(s string) {
		if !ok || !plain(s) {
			ok = false
			return
		}
		out = append(append(append(out, '"'), s...), '"')
	}
	flt := func(f float64) {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			ok = false
			return
		}
		out = appendFloat(out, f)
	}
	out = append(out, `{"schema":`...)
	out = strconv.AppendInt(out, int64(b.Schema), 10)
	out = append(out, `,"id":`...)
	str(b.ID)
	out = append(out, `,"name":`...)
	str(b.Name)
	if b.TypeCode != "" {
		out = append(out, `,"type_code":`...)
		str(b.TypeCode)
	}
	out = append(out, `,"latitude":`...)
	flt(b.Latitude)
	out = append(out, `,"longitude":`...)
	flt(b.Longitude)
	if b.ProjectID != "" {
		out = append(out, `,"project_id":`...)
		str(b.ProjectID)
	}
	out = append(out, `,"updated_at":`...)
	out = append(out, '"')
	n0 := len(out)
	out = b.UpdatedAt.AppendFormat(out, time.RFC3339Nano)
	// time.Time.MarshalJSON refuses what RFC 3339 cannot say: a year that
	// is not 4 digits, a zone of 24 hours or more (or with seconds).
	num2 := func(b []byte) byte { return 10*(b[0]-'0') + (b[1] - '0') }
	switch {
	case len(out) < n0+len("2006-01-02T15:04:05Z") || out[n0+len("9999")] != '-':
		return nil, false
	case out[len(out)-1] != 'Z':
		c := out[len(out)-len("Z07:00")]
		if ('0' <= c && c <= '9') || num2(out[len(out)-len("07:00"):]) >= 24 {
			return nil, false
		}
	}
	out = append(out, '"')
	out = append(out, `,"run_id":`...)
	str(b.RunID)
	out = append(out, '}')
	return out, ok
}

// plain reports whether json.Marshal writes s as it is between quotes:
// printable ASCII without '"', '\' and the HTML characters it escapes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendFloat formats a finite float64 as encoding/json does.
func appendFloat(out []byte, f float64) []byte {
	abs := math.Abs(f)
	fmt := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		fmt = 'e'
	}
	out = strconv.AppendFloat(out, f, fmt, -1, 64)
	if fmt == 'e' {
		// clean up e-09 to e-9
		n := len(out)
		if n >= 4 && out[n-4] == 'e' && out[n-3] == '-' && out[n-2] == '0' {
			out[n-2] = out[n-1]
			out = out[:n-1]
		}
	}
	return out
}

// Decode parses and validates a message body. Any error means the message can
// never be processed and must be dead-lettered.
func Decode(data []byte) (Box, error) {
	if len(data) > MaxMessageBytes {
		return Box{}, fmt.Errorf("message: %d bytes, more than the %d a box message may have", len(data), MaxMessageBytes)
	}
	var b Box
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&b); err != nil {
		return Box{}, fmt.Errorf("message: not a box message: %w", err)
	}
	if dec.More() {
		return Box{}, errors.New("message: trailing data after the JSON object")
	}
	if err := b.Validate(); err != nil {
		return Box{}, err
	}
	return b, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
