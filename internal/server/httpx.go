package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/drover-project/drover/api"
	"github.com/drover-project/drover/internal/engine"
	"github.com/drover-project/drover/internal/model"
	"github.com/drover-project/drover/internal/store"
)

// maxBody bounds request bodies; apply documents and job logs stay well
// under it.
const maxBody = 8 << 20

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func writeRawJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	_, _ = w.Write([]byte("\n"))
}

// apiError builds an API error.
func apiError(status int, code, format string, args ...any) *api.Error {
	return &api.Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *api.Error {
	return apiError(http.StatusBadRequest, "bad_request", format, args...)
}

// writeError maps an error to its HTTP status and JSON body.
func writeError(w http.ResponseWriter, err error) {
	var ae *api.Error
	if !errors.As(err, &ae) {
		ae = classify(err)
	}
	writeJSON(w, ae.Status, ae)
}

func classify(err error) *api.Error {
	msg := err.Error()
	var te *engine.TransitionError
	var be *engine.BusyError
	var de *model.DocError
	var fe *model.FieldError
	switch {
	case errors.As(err, &te), errors.As(err, &be):
		return apiError(http.StatusConflict, "invalid_transition", "%s", msg)
	case (errors.As(err, &de) || errors.As(err, &fe)) && errors.Is(err, store.ErrConflict):
		// A document naming a stale revision is well-formed: it lost a race.
		return apiError(http.StatusConflict, "conflict", "%s", msg)
	case errors.As(err, &de), errors.As(err, &fe):
		return apiError(http.StatusBadRequest, "invalid", "%s", msg)
	case errors.Is(err, store.ErrNotFound):
		return apiError(http.StatusNotFound, "not_found", "%s", msg)
	case errors.Is(err, store.ErrExists):
		return apiError(http.StatusConflict, "exists", "%s", msg)
	case errors.Is(err, store.ErrConflict):
		return apiError(http.StatusConflict, "conflict", "%s", msg)
	case errors.Is(err, store.ErrCompacted):
		return apiError(http.StatusGone, "compacted", "%s", msg)
	case errors.Is(err, engine.ErrNotYourJob):
		return apiError(http.StatusForbidden, "forbidden", "%s", msg)
	case errors.Is(err, store.ErrClosed):
		return apiError(http.StatusServiceUnavailable, "unavailable", "server is shutting down")
	}
	return apiError(http.StatusInternalServerError, "internal", "%s", msg)
}

// decodeBody decodes a JSON body strictly: unknown fields are errors.
func decodeBody(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return apiError(http.StatusUnsupportedMediaType, "unsupported_media_type", "request body must be application/json, not %s", ct)
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return badRequest("empty request body")
		}
		return badRequest("bad request body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return badRequest("bad request body: more than one JSON value")
	}
	return nil
}
