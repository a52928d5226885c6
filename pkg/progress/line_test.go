package progress

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseLine(t *testing.T) {
	cases := map[string]struct {
		line    string
		want    Update
		ok      bool
		wantErr string
	}{
		"fraction":             {line: "upload 16889/12836332", want: Update{Type: "upload", Current: 16889, Total: 12836332, HasTotal: true}, ok: true},
		"with identifier":      {line: "upload_single_0 5/10 /dst/my file.bin", want: Update{Type: "upload_single_0", Current: 5, Total: 10, HasTotal: true, Identifier: "/dst/my file.bin", HasIdentifier: true}, ok: true},
		"digits in the type":   {line: "upload_single_1 1 /dst/1/a.bin", want: Update{Type: "upload_single_1", Current: 1, Identifier: "/dst/1/a.bin", HasIdentifier: true}, ok: true},
		"current only":         {line: "  upload_count 25  ", want: Update{Type: "upload_count", Current: 25}, ok: true},
		"delete":               {line: "delete indexed", want: Update{Type: "indexed", Delete: true}, ok: true},
		"json":                 {line: `{"type":"imported","current":3,"total":9,"identifier":"x"}`, want: Update{Type: "imported", Current: 3, Total: 9, HasTotal: true, Identifier: "x", HasIdentifier: true}, ok: true},
		"json delete":          {line: `{"type":"indexed","delete":true}`, want: Update{Type: "indexed", Delete: true}, ok: true},
		"blank":                {line: "   "},
		"comment":              {line: "# starting"},
		"no count":             {line: "upload", wantErr: "want"},
		"negative":             {line: "upload -1/10", wantErr: "negative"},
		"not a number":         {line: "upload ten/20", wantErr: "whole number"},
		"overflow":             {line: "upload 99999999999999999999/1", wantErr: "whole number"},
		"bad type":             {line: "Upload 1/2", wantErr: "invalid type"},
		"delete without type":  {line: "delete", wantErr: "delete TYPE"},
		"json missing current": {line: `{"type":"upload"}`, wantErr: "current"},
		"json unknown field":   {line: `{"type":"upload","current":1,"extra":1}`, wantErr: "unknown field"},
		"json broken":          {line: `{"type":"upload",`, wantErr: "JSON"},
		"json two values":      {line: `{"type":"upload","current":1}{}`, wantErr: "more than one"},
		"json negative":        {line: `{"type":"upload","current":-4}`, wantErr: "negative"},
		"too long":             {line: "upload 1/2 " + strings.Repeat("x", MaxLineLength), wantErr: "longer"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, ok, err := ParseLine(tc.line)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || ok != tc.ok {
				t.Fatalf("ok, err = %t, %v; want %t, nil", ok, err, tc.ok)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("update (-want +got):\n%s", diff)
			}
		})
	}
}

// Whatever the line, ParseLine returns (never panics), and what it accepts is valid.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"upload 1/2 x", "delete indexed", `{"type":"a","current":1}`, "# c", "", "a 1", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		u, ok, err := ParseLine(line)
		if ok && (err != nil || !ValidType(u.Type) || u.Current < 0 || u.Total < 0) {
			t.Fatalf("accepted an invalid update %+v (err %v) from %q", u, err, line)
		}
	})
}
