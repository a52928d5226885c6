package node_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/onsi/gomega"
)

const receiverManifest = `apiVersion: v1
kind: Pod
metadata:
  name: event-receiver
  namespace: default
  labels: {app: event-receiver}
spec:
  containers:
  - name: receiver
    image: ` + workerImage + `
    imagePullPolicy: Never
    args: ["--receive-events", ":8080"]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: event-receiver
  namespace: default
spec:
  selector: {app: event-receiver}
  ports: [{port: 80, targetPort: 8080}]
`

// The operator, as its Deployment on the real node, announces to a CloudEvents receiver running
// as a pod (the sample sink, workflowtask-demo-worker --receive-events, behind a Service): a
// task's start and completion reach it, as its log shows. The operator keeps the sink for the
// rest of the lane.
func TestCompletionReachesReceiverPod(t *testing.T) {
	applyYAML(t, "receiver.yaml", receiverManifest)
	kubectl(t, "wait", "-n", "default", "--for=condition=Ready", "pod/event-receiver", "--timeout=120s")
	route := routeService(t, "default", "event-receiver")
	patch := fmt.Sprintf(`[{"op":"add","path":"/spec/template/spec/containers/0/args/-","value":"--notify-sink=http://%s/"}]`, route.Address)
	kubectl(t, "patch", "deployment", "-n", operatorNamespace, "workflowtask-controller-manager", "--type=json", "-p", patch)
	kubectl(t, "rollout", "status", "deployment", "-n", operatorNamespace, "workflowtask-controller-manager", "--timeout=180s")

	applyTask(t, "real-announced", "relocate", 0, 0)
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return jsonpath(t, "default", "wft", "real-announced", "{.status.phase}") }).Should(gomega.Equal("Completed"))
	uid := jsonpath(t, "default", "wft", "real-announced", "{.metadata.uid}")
	g.Eventually(func() string { return kubectl(t, "logs", "-n", "default", "event-receiver") }).
		Should(gomega.ContainSubstring(`"id":"` + uid + `.succeeded"`))
	var said []string
	for _, line := range strings.Split(kubectl(t, "logs", "-n", "default", "event-receiver"), "\n") {
		if strings.Contains(line, `"subject":"default/real-announced"`) {
			for _, what := range []string{"queued", "started", "progress", "succeeded"} {
				if strings.Contains(line, `"type":"dev.taskops.workflowtask.`+what+`.v1"`) {
					said = append(said, what)
				}
			}
		}
	}
	if len(said) < 3 || said[0] != "queued" || said[1] != "started" || said[len(said)-1] != "succeeded" {
		t.Errorf("the receiver pod logged %v for the task, want queued, started, …, succeeded", said)
	}
}
