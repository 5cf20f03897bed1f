// Package schedule decides when the producer syncs: the cron expression read
// in the operator's time zone (robfig/cron does the calendar arithmetic,
// daylight-saving changes included) and the catch-up of a run missed while
// the producer was down.
package schedule

import (
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule is SYNC_SCHEDULE read in SYNC_TIMEZONE.
type Schedule struct {
	Cron     cron.Schedule
	Location *time.Location
}

// Next returns the first scheduled time strictly after t.
func (s Schedule) Next(t time.Time) time.Time {
	return s.Cron.Next(t.In(s.Location))
}

// Missed returns the latest scheduled time in (now-catchup, now], if any: the
// run a producer that starts now should still do at once.
func (s Schedule) Missed(now time.Time, catchup time.Duration) (time.Time, bool) {
	if catchup <= 0 {
		return time.Time{}, false
	}
	var last time.Time
	for t := s.Next(now.Add(-catchup)); !t.After(now); t = s.Next(t) {
		last = t
	}
	return last, !last.IsZero()
}
