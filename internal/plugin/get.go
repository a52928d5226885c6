package plugin

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/printers"
	kubectlget "k8s.io/kubectl/pkg/cmd/get"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/internal/project"
)

// tableBarWidth is the width of the bar in get's table, in cells between the brackets.
const tableBarWidth = 20

type getOptions struct {
	*options
	allNamespaces bool
	selector      string
	// print is kubectl's -o: json, yaml, name, jsonpath, go-template (and their -file forms);
	// columns its custom-columns; "" and wide are the plugin's table.
	print   *genericclioptions.PrintFlags
	columns *kubectlget.CustomColumnsPrintFlags
}

func newGetCommand(o *options) *cobra.Command {
	g := &getOptions{options: o, print: genericclioptions.NewPrintFlags("").WithTypeSetter(project.Scheme),
		columns: kubectlget.NewCustomColumnsPrintFlags()}
	cmd := &cobra.Command{
		Use:   "get [NAME]",
		Short: "List tasks with a progress bar each",
		Example: `  kubectl workflowtask get
  kubectl workflowtask get -A -o wide
  kubectl workflowtask get upload-7f3a -o yaml
  kubectl workflowtask get -o jsonpath='{.items[*].status.progressSummary}'
  kubectl workflowtask get -o custom-columns=NAME:.metadata.name,PHASE:.status.phase,ID:.status.id`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			printer, err := g.printer()
			if err != nil {
				return err
			}
			return g.run(cmd, args, printer)
		},
	}
	cmd.Flags().BoolVarP(&g.allNamespaces, "all-namespaces", "A", false, "List the tasks of every namespace.")
	cmd.Flags().StringVarP(&g.selector, "selector", "l", "", "List the tasks matching this label selector.")
	g.print.AddFlags(cmd)
	g.columns.AddFlags(cmd)
	cmd.Flags().Lookup("output").Usage = "Output format: wide, " + strings.Join(g.formats(), ", ") + "."
	return cmd
}

// formats are the -o values kubectl's printers take.
func (g *getOptions) formats() []string {
	return append(g.print.AllowedFormats(), g.columns.AllowedFormats()...)
}

// printer is kubectl's printer for -o; nil for the plugin's table ("" or wide).
func (g *getOptions) printer() (printers.ResourcePrinter, error) {
	output := *g.print.OutputFormat
	switch {
	case output == "" || output == "wide":
		return nil, nil
	case strings.HasPrefix(output, "custom-columns"):
		p, err := g.columns.ToPrinter(output)
		if err != nil {
			return nil, fmt.Errorf("-o %s: %w", output, err)
		}
		return printers.NewTypeSetter(project.Scheme).ToPrinter(p), nil
	}
	p, err := g.print.ToPrinter()
	if genericclioptions.IsNoCompatiblePrinterError(err) {
		return nil, fmt.Errorf("unknown output format %q: use wide, %s", output, strings.Join(g.formats(), ", "))
	}
	if err != nil {
		return nil, fmt.Errorf("-o %s: %w", output, err)
	}
	return p, nil
}

func (g *getOptions) run(cmd *cobra.Command, args []string, printer printers.ResourcePrinter) error {
	if len(args) == 1 {
		if err := validName(args[0]); err != nil {
			return err
		}
	}
	c, ns, err := g.clientIn()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	var tasks []workflowv1alpha1.WorkflowTask
	var obj runtime.Object
	if len(args) == 1 {
		t := &workflowv1alpha1.WorkflowTask{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: args[0]}, t); err != nil {
			return fmt.Errorf("getting workflowtask %s/%s: %w", ns, args[0], err)
		}
		tasks, obj = []workflowv1alpha1.WorkflowTask{*t}, t
	} else {
		sel, err := labels.Parse(g.selector)
		if err != nil {
			return fmt.Errorf("bad selector: %w", err)
		}
		list := &workflowv1alpha1.WorkflowTaskList{}
		opts := []client.ListOption{client.MatchingLabelsSelector{Selector: sel}}
		if !g.allNamespaces {
			opts = append(opts, client.InNamespace(ns))
		}
		if err := c.List(ctx, list, opts...); err != nil {
			return fmt.Errorf("listing workflowtasks: %w", err)
		}
		tasks, obj = list.Items, list
	}
	out := g.streams.Out
	if printer != nil {
		u, err := unstructuredOf(obj)
		if err != nil {
			return err
		}
		return printer.PrintObj(u, out)
	}
	if len(tasks) == 0 {
		where := "in " + ns + " namespace"
		if g.allNamespaces {
			where = "in any namespace"
		}
		fmt.Fprintln(g.streams.ErrOut, "No resources found", where+".")
		return nil
	}
	return printTable(out, tasks, g.now(), *g.print.OutputFormat == "wide", g.allNamespaces)
}

// printTable prints tasks as kubectl get does, with a drawn bar in PROGRESS; wide adds the
// number of entries and the message of a stalled, failed or suspended task.
func printTable(w io.Writer, tasks []workflowv1alpha1.WorkflowTask, now time.Time, wide, withNamespace bool) error {
	tw := printers.GetNewTabWriter(w)
	header := []string{"NAME", "ID", "TYPE", "OWNER", "PHASE", "PROGRESS", "AGE"}
	if withNamespace {
		header = append([]string{"NAMESPACE"}, header...)
	}
	if wide {
		header = append(header, "ENTRIES", "MESSAGE")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for i := range tasks {
		t := &tasks[i]
		row := []string{t.Name, orDash(t.Status.ID), string(t.Spec.Type), oneLine(t.Spec.Owner), orDash(string(t.Status.Phase)),
			tableProgress(t.Status.Progress), age(t.CreationTimestamp, now)}
		if withNamespace {
			row = append([]string{t.Namespace}, row...)
		}
		if wide {
			msg := ""
			if ms := messages(t); len(ms) > 0 {
				msg = ms[0].Type + ": " + truncateRunes(ms[0].Message, 60)
			}
			row = append(row, fmt.Sprint(len(t.Status.Progress)), orDash(msg))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// tableProgress draws the task's main entry: "[######--------------] 30%", "[#####...] 3/6" for
// counts, "[    ?    ] 3/?" while the total is unknown, "-" without progress.
func tableProgress(entries []workflowv1alpha1.ProgressEntry) string {
	e := workflowv1alpha1.MainProgressEntry(entries)
	if e == nil {
		return "-"
	}
	summary := workflowv1alpha1.ProgressSummary(entries)
	if e.Total <= 0 {
		pad := strings.Repeat(" ", (tableBarWidth-1)/2)
		return "[" + pad + "?" + strings.Repeat(" ", tableBarWidth-1-len(pad)) + "] " + summary
	}
	filled := int(share(e.Current, e.Total) * tableBarWidth / 100)
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", tableBarWidth-filled) + "] " + summary
}

func age(created metav1.Time, now time.Time) string { return ago(created.Time, now) }

// ago is how long before now t was, as kubectl shows ages.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncateRunes(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// unstructuredOf is a task, or a list of tasks, as kubectl's printers get them from kubectl get:
// unstructured, every item with its apiVersion and kind, a list as a v1 List.
func unstructuredOf(obj runtime.Object) (runtime.Object, error) {
	one := func(t *workflowv1alpha1.WorkflowTask) (*unstructured.Unstructured, error) {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(t)
		if err != nil {
			return nil, fmt.Errorf("printing workflowtask %s: %w", t.Name, err)
		}
		u := &unstructured.Unstructured{Object: m}
		u.SetGroupVersionKind(workflowv1alpha1.GroupVersion.WithKind("WorkflowTask"))
		return u, nil
	}
	switch o := obj.(type) {
	case *workflowv1alpha1.WorkflowTask:
		return one(o)
	case *workflowv1alpha1.WorkflowTaskList:
		list := &unstructured.UnstructuredList{Object: map[string]any{"apiVersion": "v1", "kind": "List",
			"metadata": map[string]any{"resourceVersion": o.ResourceVersion}}}
		for i := range o.Items {
			u, err := one(&o.Items[i])
			if err != nil {
				return nil, err
			}
			list.Items = append(list.Items, *u)
		}
		return list, nil
	}
	return nil, fmt.Errorf("printing %T: not a WorkflowTask", obj)
}
