package schedule

import (
	"testing"
	"time"

	"github.com/ozmap-sytex-sync/ozmap-sytex-sync/shared/config"
)

func mustSchedule(t *testing.T, expr, zone string) Schedule {
	t.Helper()
	c, err := config.ParseSchedule(expr)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := time.LoadLocation(zone)
	if err != nil {
		t.Fatal(err)
	}
	return Schedule{Cron: c, Location: loc}
}

func TestNextRunInOperatorZone(t *testing.T) {
	cases := []struct {
		name, expr, zone string
		after            time.Time
		want             time.Time // in UTC
	}{
		{
			// São Paulo has had no DST since 2019: 21:00 local is 00:00 UTC.
			name: "default schedule, Sao Paulo", expr: "0 21 * * *", zone: "America/Sao_Paulo",
			after: time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC),
			want:  time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC),
		},
		{
			name: "just after today's run goes to tomorrow", expr: "0 21 * * *", zone: "America/Sao_Paulo",
			after: time.Date(2026, 12, 4, 0, 0, 1, 0, time.UTC),
			want:  time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC),
		},
		{
			// New York leaves DST on 2026-11-01: 21:00 EDT is 01:00 UTC, 21:00 EST is 02:00 UTC.
			name: "across the end of DST", expr: "0 21 * * *", zone: "America/New_York",
			after: time.Date(2026, 11, 1, 1, 30, 0, 0, time.UTC), // 2026-10-31 21:30 EDT
			want:  time.Date(2026, 11, 2, 2, 0, 0, 0, time.UTC),  // 2026-11-01 21:00 EST
		},
		{
			// Lisbon enters summer time on 2026-03-29 at 01:00 UTC: 21:00 WEST is 20:00 UTC.
			name: "across the start of DST", expr: "0 21 * * *", zone: "Europe/Lisbon",
			after: time.Date(2026, 3, 28, 22, 0, 0, 0, time.UTC),
			want:  time.Date(2026, 3, 29, 20, 0, 0, 0, time.UTC),
		},
		{
			// 02:30 does not exist on the spring-forward night (02:00 → 03:00 in
			// New York); robfig/cron skips it to the next day. The README tells
			// operators in DST zones not to schedule between 02:00 and 03:00.
			name: "time that does not exist on the DST night", expr: "30 2 * * *", zone: "America/New_York",
			after: time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC),  // 00:00 EST
			want:  time.Date(2026, 3, 9, 6, 30, 0, 0, time.UTC), // 02:30 EDT the next day
		},
		{
			name: "weekdays only, non-default zone", expr: "15 6 * * 1-5", zone: "Asia/Tokyo",
			after: time.Date(2026, 12, 4, 22, 0, 0, 0, time.UTC),  // Sat 07:00 JST
			want:  time.Date(2026, 12, 6, 21, 15, 0, 0, time.UTC), // Mon 06:15 JST
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := mustSchedule(t, tc.expr, tc.zone).Next(tc.after)
			if !got.Equal(tc.want) {
				t.Fatalf("next after %s = %s (%s), want %s", tc.after, got.UTC(), got, tc.want)
			}
		})
	}
}

func TestMissedRunWithinCatchup(t *testing.T) {
	s := mustSchedule(t, "0 21 * * *", "America/Sao_Paulo")
	run := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC) // 21:00 on the 3rd, São Paulo
	if got, ok := s.Missed(run.Add(2*time.Hour), 6*time.Hour); !ok || !got.Equal(run) {
		t.Fatalf("2h after the run: missed = %s, %v; want %s, true", got, ok, run)
	}
	if _, ok := s.Missed(run.Add(7*time.Hour), 6*time.Hour); ok {
		t.Fatal("7h after the run, outside a 6h catch-up: want no missed run")
	}
	if _, ok := s.Missed(run.Add(-time.Minute), 6*time.Hour); ok {
		t.Fatal("before the run: want no missed run")
	}
	if _, ok := s.Missed(run.Add(time.Hour), 0); ok {
		t.Fatal("catch-up disabled: want no missed run")
	}
}
