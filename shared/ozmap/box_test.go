package ozmap

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDecodeBox(t *testing.T) {
	tests := []struct {
		name, raw string
		want      Box
		err       string
	}{
		{"_id fallback", `{"_id":"x1","implanted":true}`, Box{ID: "x1", Implanted: true}, ""},
		{"id wins over _id", `{"id":"x1","_id":"x2","implanted":false}`, Box{ID: "x1"}, ""},
		{"coords preferred, GeoJSON order", `{"id":"x","implanted":true,"coords":[-48.5,-27.5],"lat":1,"lng":2}`, Box{ID: "x", Implanted: true, Lat: -27.5, Lng: -48.5, HasCoords: true}, ""},
		{"coords with altitude", `{"id":"x","implanted":true,"coords":[-48.5,-27.5,12]}`, Box{ID: "x", Implanted: true, Lat: -27.5, Lng: -48.5, HasCoords: true}, ""},
		{"empty coords falls back", `{"id":"x","implanted":true,"coords":[],"lat":-27.5,"lng":"-48.5"}`, Box{ID: "x", Implanted: true, Lat: -27.5, Lng: -48.5, HasCoords: true}, ""},
		{"null coords falls back", `{"id":"x","implanted":true,"coords":null,"lat":-27.5,"lng":-48.5}`, Box{ID: "x", Implanted: true, Lat: -27.5, Lng: -48.5, HasCoords: true}, ""},
		{"no coords", `{"id":"x","implanted":true,"lat":-27.5}`, Box{ID: "x", Implanted: true}, ""},
		{"string coords", `{"id":"x","implanted":true,"coords":["-48.5","-27.5"]}`, Box{ID: "x", Implanted: true, Lat: -27.5, Lng: -48.5, HasCoords: true}, ""},
		{"populated project", `{"id":"x","implanted":true,"project":{"id":"p1","name":"FLN"},"boxType":{"id":"t1","code":"CTO"}}`, Box{ID: "x", Implanted: true, ProjectID: "p1", TypeID: "t1", TypeCode: "CTO"}, ""},
		{"null refs", `{"id":"x","implanted":true,"project":null,"boxType":null,"name":null,"updatedAt":null}`, Box{ID: "x", Implanted: true}, ""},
		{"updatedAt", `{"id":"x","implanted":true,"updatedAt":"2022-08-04T19:42:07.427Z"}`, Box{ID: "x", Implanted: true, UpdatedAt: time.Date(2022, 8, 4, 19, 42, 7, 427e6, time.UTC)}, ""},
		{"bad updatedAt", `{"id":"x","implanted":true,"updatedAt":"yesterday"}`, Box{}, "field updatedAt: want RFC 3339"},
		{"NaN string", `{"id":"x","implanted":true,"coords":["NaN","1"]}`, Box{}, "field coords[0]"},
		{"one coord", `{"id":"x","implanted":true,"coords":[1]}`, Box{}, "field coords"},
		{"empty id", `{"id":" ","implanted":true}`, Box{}, "field id: empty"},
		{"implanted missing", `{"id":"x"}`, Box{}, "field implanted: missing"},
		{"implanted null", `{"id":"x","implanted":null}`, Box{}, "field implanted: missing"},
		{"boxType object without id", `{"id":"x","implanted":true,"boxType":{"code":"CTO"}}`, Box{}, "field boxType.id: missing"},
		{"boxType code not string", `{"id":"x","implanted":true,"boxType":{"id":"t","code":3}}`, Box{}, "field boxType.code: want string"},
		{"name not string", `{"id":"x","implanted":true,"name":["a"]}`, Box{}, "field name: want string, got array"},
		{"array row", `[1,2]`, Box{}, "want object, got array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeBox(json.RawMessage(tt.raw))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.UpdatedAt.Equal(tt.want.UpdatedAt) {
				t.Fatalf("UpdatedAt = %v, want %v", got.UpdatedAt, tt.want.UpdatedAt)
			}
			got.UpdatedAt, tt.want.UpdatedAt = time.Time{}, time.Time{}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestBackoffBounds(t *testing.T) {
	c, err := New(Options{BaseURL: "http://x", APIKey: "k", RetryBaseDelay: time.Second, MaxRetryAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt < 40; attempt++ {
		if d := c.backoff(attempt, nil); d <= 0 || d > maxBackoff {
			t.Fatalf("attempt %d: backoff %v", attempt, d)
		}
	}
	if d := c.backoff(1, &APIError{Status: 503, RetryAfter: time.Hour}); d != time.Minute {
		t.Fatalf("Retry-After not capped: %v", d)
	}
}
