package box

import (
	"strings"
	"testing"
	"time"
)

func valid() Box {
	return Box{Schema: SchemaVersion, ID: "5da61d35493d9c0006665404", Name: "POP - 1", TypeCode: "CTO",
		Latitude: -27.5766, Longitude: -48.5272, ProjectID: "p", UpdatedAt: time.Date(2022, 8, 4, 19, 42, 7, 0, time.UTC), RunID: "r1"}
}

func TestMsgIDIgnoresRunButNotContent(t *testing.T) {
	a, b := valid(), valid()
	b.RunID = "r2"
	if a.MsgID() != b.MsgID() {
		t.Fatal("the same box in two runs must have the same message id (dedup of a rerun)")
	}
	b.Latitude += 1e-7
	if a.MsgID() == b.MsgID() {
		t.Fatal("a changed box must get a new message id")
	}
	if !strings.HasPrefix(a.MsgID(), a.ID+"-") {
		t.Fatalf("msg id %q should start with the box id", a.MsgID())
	}
}

func TestDecodeRejectsHostileMessages(t *testing.T) {
	good, _ := valid().Encode()
	if _, err := Decode(good); err != nil {
		t.Fatalf("valid message: %v", err)
	}
	cases := map[string]string{
		"not json":       "hello",
		"wrong schema":   strings.Replace(string(good), `"schema":1`, `"schema":2`, 1),
		"missing fields": `{"schema":1}`,
		"bad id":         strings.Replace(string(good), "5da61d35493d9c0006665404", "../../etc", 1),
		"trailing data":  string(good) + `{}`,
		"too big":        strings.Repeat(" ", MaxMessageBytes+1) + string(good),
		"lat range":      strings.Replace(string(good), `"latitude":-27.5766`, `"latitude":-127.5766`, 1),
		"blank name":     strings.Replace(string(good), `"POP - 1"`, `"   "`, 1),
	}
	for name, body := range cases {
		if _, err := Decode([]byte(body)); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestNamesAreNeverSubjectTokens(t *testing.T) {
	b := valid()
	b.Name = "CTO *.> /á 🚀 " + strings.Repeat("x", 300)
	if err := b.Validate(); err != nil {
		t.Fatalf("a 300+ character name with wildcards and emoji is valid in OZmap: %v", err)
	}
	if got := Subject("ozmap.boxes", b.ID); got != "ozmap.boxes.5da61d35493d9c0006665404" {
		t.Fatalf("subject %q", got)
	}
}

func TestNameWithOuterSpacesIsInvalid(t *testing.T) {
	for _, name := range []string{" CTO-1", "CTO-1 ", "\tCTO-1", "CTO-1\n"} {
		b := Box{Schema: SchemaVersion, ID: "5da61d35493d9c0006665404", Name: name, Latitude: -27.5, Longitude: -48.5}
		if err := b.Validate(); err == nil || !strings.Contains(err.Error(), "leading or trailing spaces") {
			t.Errorf("name %q: %v", name, err)
		}
	}
	b := Box{Schema: SchemaVersion, ID: "5da61d35493d9c0006665404", Name: "CTO 1 . * > /é", Latitude: -27.5, Longitude: -48.5}
	if err := b.Validate(); err != nil {
		t.Errorf("inner spaces and symbols are fine: %v", err)
	}
}
