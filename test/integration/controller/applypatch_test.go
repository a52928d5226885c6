package controller_test

import (
	"encoding/json"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// applyPatch sends a server-side apply patch from a plain object, so it carries exactly the
// fields given (a typed object would also send its zero-valued required fields).
type applyPatch struct{ obj map[string]any }

var _ client.Patch = applyPatch{}

func (p applyPatch) Type() types.PatchType { return types.ApplyPatchType }

func (p applyPatch) Data(client.Object) ([]byte, error) { return json.Marshal(p.obj) }
