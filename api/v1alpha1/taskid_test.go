package v1alpha1

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
)

func TestTaskIDFromUID(t *testing.T) {
	uid := types.UID("2f6c1a0e-8d7b-4c33-9a51-0f3a3c1e9b27")
	id := TaskIDFromUID(uid)
	if got := TaskIDFromUID(uid); got != id {
		t.Fatalf("not deterministic: %q then %q", id, got)
	}
	if !IsValidTaskID(id) {
		t.Fatalf("derived id %q is not a valid id", id)
	}
	if TaskIDFromUID("") != "" {
		t.Fatalf("empty uid must give no id")
	}

	seen := map[string]types.UID{}
	for range 20000 {
		u := uuid.NewUUID()
		id := TaskIDFromUID(u)
		if len(id) != TaskIDLength || !IsValidTaskID(id) {
			t.Fatalf("uid %s gave malformed id %q", u, id)
		}
		if other, dup := seen[id]; dup {
			t.Fatalf("uids %s and %s share id %q", u, other, id)
		}
		seen[id] = u
	}
}

func TestIsValidTaskID(t *testing.T) {
	cases := map[string]bool{
		"mA7mF4x9Zq":               true,
		"0000000000":               true,
		"":                         false,
		"a":                        false,
		"mA7mF4x9Z":                false, // 9 chars
		"mA7mF4x9Zqq":              false, // 11 chars
		"mA7mF4x9Z-":               false,
		"mA7mF4x9Z_":               false,
		"../../etc":                false,
		"mA7mF4x9Z\x00":            false,
		"mA7mF4x9é":                false, // 10 bytes, not ASCII
		strings.Repeat("a", 1<<20): false,
	}
	for in, want := range cases {
		if got := IsValidTaskID(in); got != want {
			t.Errorf("IsValidTaskID(%.20q) = %v, want %v", in, got, want)
		}
	}
}

// The id parser accepts exactly 10 characters of [0-9A-Za-z], whatever the input.
func FuzzIsValidTaskID(f *testing.F) {
	for _, s := range []string{"mA7mF4x9Zq", "", "..", "mA7mF4x9Z\x00", "mA7mF4x9Zé"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) == TaskIDLength
		for _, r := range s {
			if !strings.ContainsRune(taskIDAlphabet, r) {
				want = false
			}
		}
		if got := IsValidTaskID(s); got != want {
			t.Fatalf("IsValidTaskID(%q) = %t, want %t", s, got, want)
		}
		if id := TaskIDFromUID(types.UID(s)); s != "" && !IsValidTaskID(id) {
			t.Fatalf("TaskIDFromUID(%q) = %q is not a valid id", s, id)
		}
	})
}
