// Package healthcheck judges an object the way GitOps tools do, with their own libraries, so
// that tests can hold the operator's status contract against them: kstatus (Flux and kubectl's
// status library, github.com/fluxcd/cli-utils), an Argo CD Lua health script run in Argo CD's
// sandbox (github.com/yuin/gopher-lua), and a Flux Kustomization's healthCheckExprs evaluated by
// Flux's own CEL evaluator (github.com/fluxcd/pkg/runtime/cel).
package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// KStatus is kstatus' verdict (InProgress, Failed, Current, Terminating, …) and its message.
func KStatus(obj map[string]any) (string, string, error) {
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		return "", "", fmt.Errorf("kstatus: %w", err)
	}
	return res.Status.String(), res.Message, nil
}

// argoTimeout is Argo CD's limit on a health script.
const argoTimeout = time.Second

// ArgoHealth runs an Argo CD health script on obj as Argo CD does (util/lua's runLua): a Lua
// state with exactly the libraries its sandbox opens — package (require), base, table and its
// safe os (time and date only, also what require("os") returns); no string, math, io or debug
// library — obj as the global "obj", a one-second limit; the script returns a table with status
// and message.
func ArgoHealth(script string, obj map[string]any) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.OsLibName, openSafeOs}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.PreloadModule(lua.OsLibName, openSafeOs)
	ctx, cancel := context.WithTimeout(context.Background(), argoTimeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", fmt.Errorf("health script: %w", err)
	}
	hs, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", errors.New("health script: returned no table")
	}
	return lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message")), nil
}

// openSafeOs opens Argo CD's safe os library: gopher-lua's os.time and os.date, nothing else.
func openSafeOs(l *lua.LState) int {
	full := l.NewTable()
	l.Push(l.NewFunction(lua.OpenOs))
	l.Call(0, 1)
	if t, ok := l.Get(-1).(*lua.LTable); ok {
		full = t
	}
	l.Pop(1)
	safe := l.NewTable()
	for _, name := range []string{"time", "date"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	l.SetGlobal(lua.OsLibName, safe)
	// What require("os") returns: opening the full library registered it as loaded.
	if loaded, ok := l.GetField(l.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable); ok {
		loaded.RawSetString(lua.OsLibName, safe)
	}
	l.Push(safe)
	return 1
}

// toLua converts a decoded JSON value to Lua (objects and arrays to tables, arrays 1-based).
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := l.NewTable()
		for k, e := range v {
			t.RawSetString(k, toLua(l, e))
		}
		return t
	case []any:
		t := l.NewTable()
		for _, e := range v {
			t.Append(toLua(l, e))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	default:
		return lua.LNil
	}
}

// FluxExprs are a Kustomization's healthCheckExprs entry for one kind.
type FluxExprs struct {
	InProgress string `json:"inProgress,omitempty"`
	Failed     string `json:"failed,omitempty"`
	Current    string `json:"current"`
}

// FluxStatus is Flux's verdict for obj under exprs, computed by Flux's own evaluator
// (github.com/fluxcd/pkg/runtime/cel, what kustomize-controller runs; RFC-0009): InProgress while
// status.observedGeneration differs from metadata.generation; otherwise the first of inProgress,
// failed, current that is true; InProgress when none is. An expression that fails to evaluate is
// an error (Flux fails the health check).
func FluxStatus(exprs FluxExprs, obj map[string]any) (string, error) {
	ev, err := fluxcel.NewStatusEvaluator(&kustomize.HealthCheckExpressions{
		InProgress: exprs.InProgress, Failed: exprs.Failed, Current: exprs.Current})
	if err != nil {
		return "", fmt.Errorf("flux health check expressions: %w", err)
	}
	res, err := ev.Evaluate(context.Background(), &unstructured.Unstructured{Object: obj})
	if err != nil {
		return "", fmt.Errorf("flux health check: %w", err)
	}
	return res.Status.String(), nil
}
