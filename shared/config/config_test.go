package config

import (
	"context"
	"strings"
	"testing"
)

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func producerEnv() map[string]string {
	return map[string]string{"OZMAP_URL": "https://client.ozmap.com.br:9994", "OZMAP_API_KEY": "s3cr3t-key"}
}

func consumerEnv() map[string]string {
	return map[string]string{"SYTEX_URL": "https://app.sytex.io", "SYTEX_TOKEN": "s3cr3t-token", "SYTEX_ORGANIZATION_ID": "139"}
}

func TestDefaults(t *testing.T) {
	p, err := LoadProducer(context.Background(), lookup(producerEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if p.NATS.URL != "nats://127.0.0.1:4222" || p.OZmapPageSize != 500 || p.Schedule != "0 21 * * *" || p.Location().String() != "America/Sao_Paulo" {
		t.Fatalf("defaults: %+v", p)
	}
	c, err := LoadConsumer(context.Background(), lookup(consumerEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Concurrency != 8 || c.MaxAttempts != 10 || len(c.NETypes()) != 0 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	cases := []struct {
		name     string
		consumer bool
		set      map[string]string
		unset    string
		want     string
	}{
		{name: "missing OZmap URL", unset: "OZMAP_URL", want: "OZMAP_URL: required"},
		{name: "missing key", unset: "OZMAP_API_KEY", want: "OZMAP_API_KEY: required"},
		{name: "page size not a number", set: map[string]string{"OZMAP_PAGE_SIZE": "abc"}, want: "OZMAP_PAGE_SIZE: invalid value (expected an integer)"},
		{name: "page size zero", set: map[string]string{"OZMAP_PAGE_SIZE": "0"}, want: "OZMAP_PAGE_SIZE"},
		{name: "bad zone", set: map[string]string{"SYNC_TIMEZONE": "Mars/Olympus"}, want: "SYNC_TIMEZONE"},
		{name: "bad cron", set: map[string]string{"SYNC_SCHEDULE": "every night"}, want: "SYNC_SCHEDULE"},
		{name: "bad duration", set: map[string]string{"SYNC_CATCHUP": "six hours"}, want: "SYNC_CATCHUP: invalid value (expected a duration"},
		{name: "bad URL", set: map[string]string{"OZMAP_URL": "client.ozmap.com.br"}, want: "OZMAP_URL"},
		{name: "bad NATS URL", set: map[string]string{"NATS_URL": "http://x"}, want: "NATS_URL"},
		{name: "bad type map", consumer: true, set: map[string]string{"SYTEX_NE_TYPE_MAP": "CTO=abc"}, want: "SYTEX_NE_TYPE_MAP"},
		{name: "org not a number", consumer: true, set: map[string]string{"SYTEX_ORGANIZATION_ID": "acme"}, want: "SYTEX_ORGANIZATION_ID"},
		{name: "missing token", consumer: true, unset: "SYTEX_TOKEN", want: "SYTEX_TOKEN: required"},
		{name: "ack wait too short", consumer: true, set: map[string]string{"CONSUMER_ACK_WAIT": "10s"}, want: "CONSUMER_ACK_WAIT"},
		{name: "project id not hex", set: map[string]string{"OZMAP_PROJECT_IDS": "5d9f3ff9200141000647f814,north"}, want: `OZMAP_PROJECT_IDS: "north" is not an OZmap project id`},
		{name: "project ids only commas", set: map[string]string{"OZMAP_PROJECT_IDS": " , "}, want: "OZMAP_PROJECT_IDS: \" , \" lists no project id"},
		{name: "dry run not a bool", consumer: true, set: map[string]string{"CONSUMER_DRY_RUN": "maybe"}, want: "CONSUMER_DRY_RUN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := producerEnv()
			if tc.consumer {
				env = consumerEnv()
			}
			for k, v := range tc.set {
				env[k] = v
			}
			delete(env, tc.unset)
			var err error
			if tc.consumer {
				_, err = LoadConsumer(context.Background(), lookup(env))
			} else {
				_, err = LoadProducer(context.Background(), lookup(env))
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v; want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("error repeats a secret: %v", err)
			}
		})
	}
}

func TestNETypeMap(t *testing.T) {
	m, err := ParseNETypeMap(" CTO=321, CEO = 322 ")
	if err != nil || m["CTO"] != 321 || m["CEO"] != 322 || len(m) != 2 {
		t.Fatalf("got %v, %v", m, err)
	}
	for _, bad := range []string{"CTO", "CTO=0", "=3", "CTO=1,CTO=2", "CTO=-1"} {
		if _, err := ParseNETypeMap(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestProjectIDsAndDryRun(t *testing.T) {
	env := producerEnv()
	env["OZMAP_PROJECT_IDS"] = " 5d9f3ff9200141000647f814, 5D9F3FF9200141000647F815 ,5d9f3ff9200141000647f814"
	p, err := LoadProducer(context.Background(), lookup(env))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.ProjectIDs(), ","); got != "5d9f3ff9200141000647f814,5D9F3FF9200141000647F815" {
		t.Fatalf("project ids: %q", got)
	}
	if p, err := LoadProducer(context.Background(), lookup(producerEnv())); err != nil || p.ProjectIDs() != nil {
		t.Fatalf("unset OZMAP_PROJECT_IDS must mean every project: %v, %v", p.ProjectIDs(), err)
	}
	cenv := consumerEnv()
	cenv["CONSUMER_DRY_RUN"] = "true"
	c, err := LoadConsumer(context.Background(), lookup(cenv))
	if err != nil || !c.DryRun {
		t.Fatalf("CONSUMER_DRY_RUN=true: %+v, %v", c, err)
	}
}
