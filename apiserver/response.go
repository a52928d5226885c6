package apiserver

import (
	"encoding/json"
	"net/http"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// Result codes of the envelope (Cloudreve v4's where it has one).
const (
	CodeSuccess       = 0
	CodeLoginRequired = 401
	CodeNotFound      = 404
	CodeMethod        = 405
	CodeTooMany       = 429
	CodeParamErr      = 40001
	CodeInternal      = 50000
)

// Messages of the envelope.
const (
	MsgLoginRequired = "Login required"
	MsgParseID       = "Failed to parse object ID"
	MsgNotFound      = "Not found"
	MsgMethod        = "Method not allowed"
	MsgTooMany       = "Too many requests, please retry later"
	MsgInternal      = "Internal server error"
)

// emptyBody is the answer for a task that has no progress, does not exist, or is not the
// caller's to see: the same bytes in every case, so nobody learns that a task exists.
var emptyBody = []byte(`{"data":{},"code":0,"msg":""}`)

// progressJSON is one progress entry as the Cloudreve API shows it.
type progressJSON struct {
	Total      int64  `json:"total"`
	Current    int64  `json:"current"`
	Identifier string `json:"identifier"`
}

type successBody struct {
	Data map[string]progressJSON `json:"data"`
	Code int                     `json:"code"`
	Msg  string                  `json:"msg"`
}

type errorBody struct {
	Code          int    `json:"code"`
	Msg           string `json:"msg"`
	Error         string `json:"error,omitempty"`
	CorrelationID string `json:"correlation_id"`
}

// progressBody is the success envelope for a task's progress list.
func progressBody(entries []workflowv1alpha1.ProgressEntry) []byte {
	if len(entries) == 0 {
		return emptyBody
	}
	data := make(map[string]progressJSON, len(entries))
	for _, e := range entries {
		data[e.Type] = progressJSON{Total: e.Total, Current: e.Current, Identifier: e.Identifier}
	}
	b, err := json.Marshal(successBody{Data: data})
	if err != nil { // cannot happen: plain strings and integers
		return emptyBody
	}
	return b
}

// writeBody answers HTTP 200 with a JSON envelope, Cloudreve's convention for every result.
func writeBody(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Cache-Control"] = noStore
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// Header values of every answer, shared (net/http never changes them).
var (
	contentTypeJSON = []string{"application/json; charset=utf-8"}
	noStore         = []string{"no-store"}
	noSniff         = []string{"nosniff"}
)

// writeError answers an error envelope; rawErr is shown only in debug mode.
func writeError(w http.ResponseWriter, code int, msg, correlationID string, rawErr error, debug bool) {
	body := errorBody{Code: code, Msg: msg, CorrelationID: correlationID}
	if debug && rawErr != nil {
		body.Error = rawErr.Error()
	}
	b, _ := json.Marshal(body)
	writeBody(w, b)
}
