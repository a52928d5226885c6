package plugin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
)

// logsPoll is how often logs -f looks for new pods and containers (a retry's pod, a container
// that started).
const logsPoll = time.Second

// maxLogLine bounds one line of a container's log as the plugin reads it.
const maxLogLine = 1 << 20

type logsOptions struct {
	*options
	follow    bool
	container string
}

func newLogsCommand(o *options) *cobra.Command {
	l := &logsOptions{options: o}
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the logs of a task's pods, each line prefixed with [pod/container]; -f follows them, a retry's new pod too",
		Example: `  kubectl workflowtask logs upload-7f3a
  kubectl workflowtask logs -f upload-7f3a -c worker`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return l.run(cmd.Context(), args[0]) },
	}
	cmd.Flags().BoolVarP(&l.follow, "follow", "f", false, "Follow the logs until the task finished and its containers ended.")
	cmd.Flags().StringVarP(&l.container, "container", "c", "", "Only this container of each pod.")
	return cmd
}

// logStream is one container of one pod whose log is read.
type logStream struct{ pod, container string }

func (l *logsOptions) run(ctx context.Context, name string) error {
	c, ns, err := l.clientFor(name)
	if err != nil {
		return err
	}
	cfg, err := l.restConfig()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("connecting to the cluster: %w", err)
	}
	task := &workflowv1alpha1.WorkflowTask{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, task); err != nil {
		return fmt.Errorf("getting workflowtask %s/%s: %w", ns, name, err)
	}
	out := &lockedWriter{w: l.streams.Out}
	started := map[logStream]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(ns), client.MatchingLabels{workflowv1alpha1.LabelTaskName: name}); err != nil {
			return fmt.Errorf("listing the pods of workflowtask %s/%s: %w", ns, name, err)
		}
		for _, s := range readableStreams(pods.Items, l.container) {
			if started[s] {
				continue
			}
			started[s] = true
			if !l.follow {
				if err := copyLog(ctx, cs, ns, s, false, out); err != nil {
					return err
				}
				continue
			}
			wg.Go(func() {
				if err := copyLog(ctx, cs, ns, s, true, out); err != nil && ctx.Err() == nil {
					out.line(fmt.Sprintf("[%s/%s] (log ended: %v)", s.pod, s.container, err))
				}
			})
		}
		if !l.follow {
			if len(started) == 0 {
				fmt.Fprintf(l.streams.ErrOut, "No logs yet: workflowtask %s/%s has no pod with a started container.\n", ns, name)
			}
			return nil
		}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, task); err != nil || task.Status.Phase.IsFinished() {
			return nil // finished (or gone): the streams end with their containers (wg)
		}
		if !sleep(ctx, logsPoll) {
			return nil
		}
	}
}

// readableStreams are the containers (init, sidecars, main) of the pods, oldest pod first,
// that have started, so have a log to read; only container when it is set.
func readableStreams(pods []corev1.Pod, container string) []logStream {
	sort.SliceStable(pods, func(i, j int) bool { return pods[i].CreationTimestamp.Before(&pods[j].CreationTimestamp) })
	var out []logStream
	for _, p := range pods {
		for _, st := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			if container != "" && st.Name != container {
				continue
			}
			if st.State.Running != nil || st.State.Terminated != nil || st.LastTerminationState.Terminated != nil {
				out = append(out, logStream{pod: p.Name, container: st.Name})
			}
		}
	}
	return out
}

// copyLog writes a container's log to out, each line prefixed with [pod/container].
func copyLog(ctx context.Context, cs kubernetes.Interface, ns string, s logStream, follow bool, out *lockedWriter) error {
	rc, err := cs.CoreV1().Pods(ns).GetLogs(s.pod, &corev1.PodLogOptions{Container: s.container, Follow: follow}).Stream(ctx)
	if err != nil {
		return fmt.Errorf("the log of %s/%s: %w", s.pod, s.container, err)
	}
	defer func() { _ = rc.Close() }()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 0, 64<<10), maxLogLine)
	prefix := "[" + s.pod + "/" + s.container + "] "
	for sc.Scan() {
		out.line(prefix + printable(sc.Text()))
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("the log of %s/%s: %w", s.pod, s.container, err)
	}
	return nil
}

// lockedWriter writes whole lines from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, s+"\n")
}

// printable is a log line without control characters (escape codes, carriage returns) but tabs,
// so a pod cannot drive the user's terminal; unlike oneLine it is never shortened.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r != '\t' && (unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)) {
			return ' '
		}
		return r
	}, s)
}
