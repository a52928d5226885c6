package progress

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxLineLength bounds one line of a progress file.
const MaxLineLength = 64 << 10

// Update is one parsed line of a progress file.
type Update struct {
	Type          string
	Current       int64
	Total         int64
	HasTotal      bool   // false: keep the entry's total
	Identifier    string // with HasIdentifier
	HasIdentifier bool
	Delete        bool
}

// ParseLine parses one line of a progress file. It accepts:
//
//	TYPE CURRENT/TOTAL [IDENTIFIER]   upload 16889/12836332 /dst/a.bin
//	TYPE CURRENT                      upload_count 25          (total unchanged)
//	delete TYPE                       delete indexed
//	{"type":"upload","current":1,"total":2,"identifier":"x"}   (JSON; "delete":true deletes)
//
// Blank lines and lines starting with # give ok=false and no error.
func ParseLine(line string) (u Update, ok bool, err error) {
	line = strings.TrimSpace(line)
	switch {
	case line == "" || strings.HasPrefix(line, "#"):
		return Update{}, false, nil
	case len(line) > MaxLineLength:
		return Update{}, false, fmt.Errorf("line longer than %d bytes", MaxLineLength)
	case strings.HasPrefix(line, "{"):
		u, err = parseJSONLine(line)
	default:
		u, err = parseTextLine(line)
	}
	if err != nil {
		return Update{}, false, err
	}
	if !ValidType(u.Type) {
		return Update{}, false, fmt.Errorf("invalid type %q (want lower-case snake_case, at most 63 characters)", u.Type)
	}
	return u, true, nil
}

func parseTextLine(line string) (Update, error) {
	f := strings.Fields(line)
	if f[0] == "delete" {
		if len(f) != 2 {
			return Update{}, errors.New(`want "delete TYPE"`)
		}
		return Update{Type: f[1], Delete: true}, nil
	}
	if len(f) < 2 {
		return Update{}, errors.New(`want "TYPE CURRENT[/TOTAL] [IDENTIFIER]"`)
	}
	u := Update{Type: f[0]}
	cur, tot, hasTotal := strings.Cut(f[1], "/")
	var err error
	if u.Current, err = parseCount(cur); err != nil {
		return Update{}, fmt.Errorf("current: %w", err)
	}
	if hasTotal {
		if u.Total, err = parseCount(tot); err != nil {
			return Update{}, fmt.Errorf("total: %w", err)
		}
		u.HasTotal = true
	}
	if len(f) > 2 {
		// The identifier is the rest of the line, spaces included: the line is trimmed and
		// starts with the type, then the count.
		rest := strings.TrimSpace(line[len(f[0]):])
		u.Identifier, u.HasIdentifier = strings.TrimSpace(rest[len(f[1]):]), true
	}
	return u, nil
}

func parseJSONLine(line string) (Update, error) {
	var j struct {
		Type       string  `json:"type"`
		Current    *int64  `json:"current"`
		Total      *int64  `json:"total"`
		Identifier *string `json:"identifier"`
		Delete     bool    `json:"delete"`
	}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return Update{}, fmt.Errorf("JSON: %w", err)
	}
	if dec.More() {
		return Update{}, errors.New("JSON: more than one value on the line")
	}
	u := Update{Type: j.Type, Delete: j.Delete}
	if j.Delete {
		return u, nil
	}
	if j.Current == nil {
		return Update{}, errors.New(`JSON: "current" is required`)
	}
	if *j.Current < 0 || (j.Total != nil && *j.Total < 0) {
		return Update{}, errors.New("JSON: current and total must not be negative")
	}
	u.Current = *j.Current
	if j.Total != nil {
		u.Total, u.HasTotal = *j.Total, true
	}
	if j.Identifier != nil {
		u.Identifier, u.HasIdentifier = *j.Identifier, true
	}
	return u, nil
}

func parseCount(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative", n)
	}
	return n, nil
}

// Record records a parsed update in memory (like Set, Delete, SetIdentifier; the loop writes it).
func (r *Reporter) Record(u Update) error {
	if u.Delete {
		r.Delete(u.Type)
		return nil
	}
	e, err := r.Entry(u.Type)
	if err != nil {
		return err
	}
	if u.HasTotal {
		e.Set(u.Current, u.Total)
	} else {
		e.SetCurrent(u.Current)
	}
	if u.HasIdentifier {
		e.SetIdentifier(u.Identifier)
	}
	return nil
}
