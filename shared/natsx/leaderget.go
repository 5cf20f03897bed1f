package natsx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LastMsg is the last message on a subject as the stream leader has it.
type LastMsg struct {
	Sequence uint64
	Header   nats.Header
	Data     []byte
}

// ErrNoMessage says the stream holds no message on the subject.
var ErrNoMessage = errors.New("no message on that subject")

// LeaderGetLast reads the last message on subject from the stream's leader
// (the STREAM.MSG.GET API). Direct gets, which the jetstream package uses
// for streams and KV buckets with AllowDirect, may be answered by any
// replica, including a follower that lags: right for a cache, wrong for a
// decision like "this box was withdrawn" or "this run has ended".
func LeaderGetLast(ctx context.Context, nc *nats.Conn, stream, subject string) (LastMsg, error) {
	req, err := json.Marshal(struct {
		LastBySubject string `json:"last_by_subj"`
	}{subject})
	if err != nil {
		return LastMsg{}, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	resp, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, req)
	if err != nil {
		return LastMsg{}, fmt.Errorf("get last message of %s from the %s leader: %w", subject, stream, err)
	}
	var r struct {
		Message *struct {
			Sequence uint64 `json:"seq"`
			Header   []byte `json:"hdrs"`
			Data     []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return LastMsg{}, fmt.Errorf("get last message of %s: answer is not JSON: %w", subject, err)
	}
	switch {
	case r.Error != nil && r.Error.ErrCode == int(jetstream.JSErrCodeMessageNotFound):
		return LastMsg{}, ErrNoMessage
	case r.Error != nil:
		return LastMsg{}, fmt.Errorf("get last message of %s: %d %s", subject, r.Error.Code, r.Error.Description)
	case r.Message == nil:
		return LastMsg{}, fmt.Errorf("get last message of %s: empty answer", subject)
	}
	m := LastMsg{Sequence: r.Message.Sequence, Data: r.Message.Data}
	if len(r.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(r.Message.Header); err != nil {
			return LastMsg{}, fmt.Errorf("get last message of %s: headers: %w", subject, err)
		}
	}
	return m, nil
}
