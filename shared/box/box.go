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

// MsgID is the Nats-Msg-Id of the box's message: the box id plus its content
// fingerprint, so a republish of unchanged content inside the stream's
// duplicates window is dropped, while a changed box always goes through.
func (b Box) MsgID() string { return b.ID + "-" + b.Fingerprint() }

// Encode returns the message body.
func (b Box) Encode() ([]byte, error) {
	b.Schema = SchemaVersion
	return json.Marshal(b)
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
