package ozmap

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// scanCases are rows on which the single-pass decoder must agree with the
// map-based reference (box_reference_test.go): same Box, same error text.
var scanCases = []string{
	`{"id":"5d9f3ff9200141000647f814","name":"CTO-1","implanted":true,"boxType":"t1","project":{"_id":"p1","name":"x"},"updatedAt":"2024-01-02T03:04:05.123Z","coords":[-48.5,-27.5]}`,
	`{"_id":"x1","implanted":true}`,
	`{"id":"x1","_id":"x2","implanted":false}`,
	`{"id":null,"_id":"x2","implanted":false}`,
	`{"id":3,"_id":"x2","implanted":false}`,
	`{"_id":3,"implanted":false}`,
	`{"_id":"  ","implanted":false}`,
	`{"ID":"x1","implanted":true}`,
	`{"Id":"x1","id":"x2","Implanted":true,"implanted":false,"NAME":"n"}`,
	`{"id":"x1","id":"x3","implanted":true,"implanted":false}`,
	`{"id":"x1","implanted":true,"name":"a","name":null}`,
	`{"\u0069d":"x\u00e9","n\u0061me":"caf\u00e9 \ud83d\ude00","implanted":true}`,
	`{"id":"x\ud800","name":"bad \udc00 surrogate","implanted":true}`,
	"{\"id\":\"x\xff\xfe\",\"name\":\"n\xc3\",\"implanted\":true}",
	"{\"id\xff\":\"x\",\"implanted\":true}",
	`{"id":"x","implanted":"true"}`,
	`{"id":"x","implanted":1}`,
	`{"id":"x","implanted":null}`,
	`{"id":"x"}`,
	`{"id":"x","implanted":true,"boxType":{"id":"t","code":"CTO"},"project":"p"}`,
	`{"id":"x","implanted":true,"boxType":{"_id":"t","code":null},"project":{"id":""}}`,
	`{"id":"x","implanted":true,"boxType":{"code":"CTO"}}`,
	`{"id":"x","implanted":true,"boxType":{"id":"t","code":3}}`,
	`{"id":"x","implanted":true,"boxType":{"id":7}}`,
	`{"id":"x","implanted":true,"boxType":[1]}`,
	`{"id":"x","implanted":true,"boxType":"t","project":{"_id":"p","id":null}}`,
	`{"id":"x","implanted":true,"project":{"_id":"p","ID":"q"}}`,
	`{"id":"x","implanted":true,"project":true}`,
	`{"id":"x","implanted":true,"updatedAt":"2022-08-04T19:42:07.427Z"}`,
	`{"id":"x","implanted":true,"updatedAt":"2022-08-04T19:42:07-03:00"}`,
	`{"id":"x","implanted":true,"updatedAt":"yesterday, a very long time ago in a galaxy far away"}`,
	`{"id":"x","implanted":true,"updatedAt":12}`,
	`{"id":"x","implanted":true,"coords":[-48.5,-27.5],"lat":1,"lng":2}`,
	`{"id":"x","implanted":true,"coords":[-48.5,-27.5,12]}`,
	`{"id":"x","implanted":true,"coords":[],"lat":-27.5,"lng":"-48.5"}`,
	`{"id":"x","implanted":true,"coords":null,"lat":-27.5,"lng":-48.5}`,
	`{"id":"x","implanted":true,"coords":[ "-48.5" , " -27.5 " ]}`,
	`{"id":"x","implanted":true,"coords":["NaN","1"]}`,
	`{"id":"x","implanted":true,"coords":["1","Inf"]}`,
	`{"id":"x","implanted":true,"coords":[1e400,1]}`,
	`{"id":"x","implanted":true,"coords":[1]}`,
	`{"id":"x","implanted":true,"coords":[200,1]}`,
	`{"id":"x","implanted":true,"coords":[1,95]}`,
	`{"id":"x","implanted":true,"coords":{"lat":1}}`,
	`{"id":"x","implanted":true,"coords":[null,1]}`,
	`{"id":"x","implanted":true,"coords":[[1],1]}`,
	`{"id":"x","implanted":true,"lat":"abc","lng":1}`,
	`{"id":"x","implanted":true,"lat":1,"lng":true}`,
	`{"id":"x","implanted":true,"lat":91,"lng":1}`,
	`{"id":"x","implanted":true,"lat":1,"lng":181}`,
	`{"id":"x","implanted":true,"lat":-0.0,"lng":1E2}`,
	`{"id":"x","implanted":true,"extra":{"deep":[1,2,{"a":[true,false,null,"s\"\\\/\b\f\n\r\t\u1234"]}]}}`,
	` { "id" : "x" , "implanted" : true } `,
	"\t{\"id\":\"x\",\"implanted\":true}\r\n",
	`[1,2]`, `"s"`, `3`, `null`, `true`, ``, `   `,
	`{`, `{"id":"x"`, `{"id":"x",}`, `{"id":"x","implanted":true}}`, `{"id":"x","implanted":true} x`,
	`{"id":"x","implanted":tru}`, `{"id":"x","implanted":true,"n":01}`, `{"id":"x","implanted":true,"n":1.}`,
	`{"id":"x","implanted":true,"n":-}`, `{"id":"x","implanted":true,"n":1e}`, `{"id":"x","implanted":true,"n":.5}`,
	`{"id":"x","implanted":true,"n":"\x"}`, `{"id":"x","implanted":true,"n":"\u12"}`, "{\"id\":\"x\",\"implanted\":true,\"n\":\"a\tb\"}",
	`{"id":"x","implanted":true,"n":[1,]}`, `{"id":"x","implanted":true,"n":[,1]}`, `{"id":"x" "implanted":true}`,
	`{"id":"x","implanted":true,3:4}`, `{"id":"x","implanted":true,"n"}`, `{"id":"x","implanted":true,"n":+1}`,
	`{"id":"x","implanted":true,"n":NaN}`, `{"id":"x","implanted":true,"n":[}`, `{"id":"x","implanted":true,"n":{]}`,
	`{"id":"x","implanted":true,"n":"unterminated}`,
	`{"id":"x","implanted":true,"deep":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `}`,
	`{"id":"x","implanted":true,"deep":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`,
	`{"id":"x","implanted":true,"deep":` + strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat("}", 10000) + `}`,
}

func checkScanAgrees(t *testing.T, raw string) {
	t.Helper()
	got, gerr := decodeBox(json.RawMessage(raw))
	want, werr := refDecodeBox(json.RawMessage(raw))
	if fmt.Sprint(gerr) != fmt.Sprint(werr) {
		t.Fatalf("row %.200q:\nerr  %v\nwant %v", raw, gerr, werr)
	}
	if gerr == nil {
		if !got.UpdatedAt.Equal(want.UpdatedAt) {
			t.Fatalf("row %.200q: UpdatedAt %v, want %v", raw, got.UpdatedAt, want.UpdatedAt)
		}
		got.UpdatedAt = want.UpdatedAt
		if got != want {
			t.Fatalf("row %.200q:\ngot  %+v\nwant %+v", raw, got, want)
		}
	}
}

func TestDecodeBoxAgreesWithReference(t *testing.T) {
	for _, raw := range scanCases {
		checkScanAgrees(t, raw)
	}
	// Mutations of the valid rows: every byte replaced, dropped or
	// duplicated in turn, and random splices (deterministic seed).
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(`{}[]":,\ 0123456789.eE+-tfnulsrIiDd_xu` + "\x00\x1f\x7f\xc3\xa9\xff")
	for _, raw := range scanCases[:12] {
		for i := range len(raw) {
			checkScanAgrees(t, raw[:i]+raw[i+1:])
			checkScanAgrees(t, raw[:i]+raw[i:i+1]+raw[i:])
			for range 3 {
				c := alphabet[r.IntN(len(alphabet))]
				checkScanAgrees(t, raw[:i]+string(c)+raw[i+1:])
			}
		}
	}
}

func FuzzDecodeBoxAgreesWithReference(f *testing.F) {
	for _, raw := range scanCases {
		if len(raw) < 1000 {
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw string) { checkScanAgrees(t, raw) })
}

func TestScanArrayAgreesWithEncodingJSON(t *testing.T) {
	for _, raw := range []string{`[]`, ` [ ] `, `[1]`, `[1, "a" ,{"b":[2]},null,true,false, -0.5e+3]`, `[`, `[1,]`, `[1 2]`, `[1]]`, `{}`, ``} {
		var want []json.RawMessage
		werr := json.Unmarshal([]byte(raw), &want)
		got, gerr := scanArray([]byte(raw), nil)
		if (gerr == nil) != (werr == nil) || fmt.Sprintf("%s", got) != fmt.Sprintf("%s", want) && werr == nil {
			t.Errorf("%q: got %s, %v; want %s, %v", raw, got, gerr, want, werr)
		}
	}
}
