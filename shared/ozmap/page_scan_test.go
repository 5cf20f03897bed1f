package ozmap

import (
	"encoding/json"
	"fmt"
	"testing"
)

// refPage is what parsePage read through encoding/json alone (wireEnvelope)
// before fastPage: the reference fastPage must agree with.
func refPage(body []byte) (page, bool) {
	p := page{total: -1}
	var env wireEnvelope
	if json.Unmarshal(body, &env) != nil || !env.Rows.present {
		return p, false
	}
	switch env.Rows.kind {
	case "array", "null":
	default:
		return p, false
	}
	p.rows = env.Rows.rows
	p.envelope(env.Total, env.HasNextPage, env.NextURL)
	return p, true
}

func pageString(p page, ok bool) string {
	h := "<nil>"
	if p.hasNextPage != nil {
		h = fmt.Sprint(*p.hasNextPage)
	}
	return fmt.Sprintf("ok=%v rows=%q total=%d hasNext=%s next=%q", ok, p.rows, p.total, h, p.nextURL)
}

func FuzzFastPageAgreesWithEncodingJSON(f *testing.F) {
	for _, body := range []string{
		`{"total":2,"count":2,"start":0,"limit":2,"rows":[{"id":"a"}, {"id":"b","x":[1,2]}],"hasNextPage":true,"nextUrl":"/api/v2/boxes?page=2"}`,
		`{"rows":[]}`, `{"rows":null}`, `{}`, `{"rows":{}}`, `{"rows":"x"}`, `{"rows":[1],"rows":null}`, `{"rows":[1],"rows":[2,3]}`,
		`{"ROWS":[1],"Total":"3","HASNEXTPAGE":false,"NextURL":"\u002fa"}`, `{"rowſ":[1],"total":1e3}`, `{"rows":[1],"total":-1,"hasNextPage":"true","nextUrl":5}`,
		`{"rows":[1],"total":9999999999999999999999,"hasNextPage":null,"nextUrl":null}`, `{"r\u006fws":[{"a":"\u00e9"}]}`,
		`{"rows":[1,]}`, `{"rows":[1]`, `{"rows":[1]} x`, `[]`, ` {"rows" : [ 1 , 2 ] } `, `{"rows":[1],"total":1.5}`,
		"{\"rows\":[\"\xff\"]}", `{"rows":[1],"total":0}`,
	} {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body string) {
		gp, gok := fastPage([]byte(body))
		wp, wok := refPage([]byte(body))
		if gok && pageString(gp, gok) != pageString(wp, wok) {
			t.Fatalf("body %.300q:\nfast %s\nref  %s", body, pageString(gp, gok), pageString(wp, wok))
		}
		if wok && !gok {
			t.Fatalf("body %.300q: fastPage refused a page encoding/json reads: %s", body, pageString(wp, wok))
		}
	})
}
