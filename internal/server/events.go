package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// WireEvent is one event on GET /api/v1/events.
type WireEvent struct {
	Type     string          `json:"type"`
	Revision int64           `json:"revision"`
	Kind     string          `json:"kind"`
	Name     string          `json:"name"`
	Object   json.RawMessage `json:"object,omitempty"`
}

// handleEvents streams store events as Server-Sent Events. from is the last
// revision the client has seen; events after it follow. Without from, the
// stream starts at the current revision. A from older than the retained
// history is answered 410 with code "compacted": list again and watch from
// the list's revision. If the client reads too slowly the stream ends with
// an "error" event naming the revision to resume from.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, p *principal) {
	q := r.URL.Query()
	var from int64
	var err error
	if v := q.Get("from"); v != "" {
		from, err = strconv.ParseInt(v, 10, 64)
		if err != nil || from < 0 {
			writeError(w, badRequest("from %q is not a revision", v))
			return
		}
	} else if v := r.Header.Get("Last-Event-ID"); v != "" {
		// Without this check a bad header would replay the whole history.
		from, err = strconv.ParseInt(v, 10, 64)
		if err != nil || from < 0 {
			writeError(w, badRequest("Last-Event-ID %q is not a revision", v))
			return
		}
	} else if from, err = s.st.Revision(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	kinds := map[string]bool{}
	if v := q.Get("kinds"); v != "" {
		for _, k := range strings.Split(v, ",") {
			info, err := model.Lookup(strings.TrimSpace(k))
			if err != nil {
				writeError(w, badRequest("kinds: %v", err))
				return
			}
			if !canRead(p, info.Kind) {
				writeError(w, forbidden(p, "watch "+info.Plural))
				return
			}
			kinds[info.Kind] = true
		}
	}
	ch, err := s.st.Watch(r.Context(), from)
	if err != nil {
		if errors.Is(err, store.ErrCompacted) {
			oldest, _ := s.st.OldestRevision(r.Context())
			writeError(w, apiError(http.StatusGone, "compacted", "revision %d is no longer retained (oldest: %d): list again and watch from the list's revision", from, oldest))
			return
		}
		writeError(w, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, errors.New("streaming unsupported"))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, ": drover events from revision %d\n\n", from)
	flusher.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	var expired <-chan time.Time
	if p.ExpiresAt != nil {
		t := time.NewTimer(time.Until(*p.ExpiresAt))
		defer t.Stop()
		expired = t.C
	}
	// endSession ends the stream when its session no longer holds: the
	// client's resume then gets the 401 that says why.
	endSession := func(err error) {
		msg, _ := json.Marshal(map[string]string{"error": "session ended: " + err.Error(), "code": "unauthorized"})
		fmt.Fprintf(w, "event: error\ndata: %s\n\n", msg)
		flusher.Flush()
	}
	last := from
	dirty := false
	// ": rev N" after a burst says every event up to N was sent, so a
	// client keeping a copy (a manager's mirror) can move its cursor to N
	// without waiting for the next revision: events of one revision arrive
	// together, but a burst may end inside one.
	complete, announced := from, from
	flush := func() {
		if complete > announced {
			fmt.Fprintf(w, ": rev %d\n\n", complete)
			announced = complete
		}
		flusher.Flush()
		dirty = false
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-expired:
			endSession(errors.New("the token expired"))
			return
		case <-ping.C:
			fmt.Fprintf(w, ": ping %d\n\n", last)
			flush()
		case ev, ok := <-ch:
			if !ok {
				if r.Context().Err() == nil {
					fmt.Fprintf(w, "event: error\ndata: {\"error\":\"stream ended (client too slow or server stopping); resume with from=%d\",\"code\":\"resume\",\"revision\":%d}\n\n", last, last)
					flusher.Flush()
				}
				return
			}
			last = ev.Revision
			if ev.Last {
				complete = ev.Revision
			}
			if concernsSession(p, ev.Record.Kind, ev.Record.Name) {
				// Look at the store, not the event: a replayed event may be
				// long out of date.
				if err := s.recheck(r.Context(), p); err != nil {
					endSession(err)
					return
				}
			}
			if (len(kinds) > 0 && !kinds[ev.Record.Kind]) || !canRead(p, ev.Record.Kind) {
				if dirty && len(ch) == 0 {
					flush()
				}
				continue
			}
			we := WireEvent{Type: string(ev.Type), Revision: ev.Revision, Kind: ev.Record.Kind, Name: ev.Record.Name}
			if ev.Type == store.EventPut {
				obj, err := s.present(ev.Record)
				if err == nil {
					we.Object = obj
				}
			}
			b, _ := json.Marshal(we)
			fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Revision, ev.Type, b)
			dirty = true
			// Flush once a burst is written, not per event.
			if len(ch) == 0 {
				flush()
			}
		}
	}
}
