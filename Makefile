# workflowtask-operator. `make help` lists the targets.
# The two commands a newcomer needs:  `make run` (the main job) and `make test` (all tests).

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
ROOT := $(CURDIR)
BIN := $(ROOT)/bin
GOOS := $(shell go env GOOS)
GOARCH := $(shell go env GOARCH)
K8S_VERSION := 1.37.2
# Where hack/build-controlplane.sh puts etcd, kube-apiserver and kubectl (setup-envtest's layout).
KUBEBUILDER_ASSETS ?= $(BIN)/k8s/$(K8S_VERSION)-$(GOOS)-$(GOARCH)
export KUBEBUILDER_ASSETS
CONTROLLER_GEN := $(BIN)/controller-gen
GOLANGCI_LINT := $(BIN)/golangci-lint
KREW := $(BIN)/kubectl-krew
VALIDATE_KREW := $(BIN)/validate-krew-manifest
HELM := $(BIN)/helm
HELM_VERSION := v4.3.2
CHART_VERSION ?= 0.1.0
GO_TEST_FLAGS ?= -count=1
IMG ?= workflowtask-operator:dev

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-18s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

##@ Development

$(CONTROLLER_GEN): hack/tools/codegen/go.mod hack/tools/codegen/go.sum
	go -C hack/tools/codegen build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

$(GOLANGCI_LINT): hack/tools/lint/go.mod hack/tools/lint/go.sum
	go -C hack/tools/lint build -o $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

$(KREW) $(VALIDATE_KREW): hack/tools/krew/go.mod hack/tools/krew/go.sum
	go -C hack/tools/krew build -o $(KREW) sigs.k8s.io/krew/cmd/krew
	go -C hack/tools/krew build -o $(VALIDATE_KREW) sigs.k8s.io/krew/cmd/validate-krew-manifest

$(HELM): hack/tools/helm/go.mod hack/tools/helm/go.sum
	go -C hack/tools/helm build -ldflags "-X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)" -o $(HELM) helm.sh/helm/v4/cmd/helm

.PHONY: helm
helm: $(HELM) ## The Helm chart in dist/chart, made from config/default (hack/helmchart; CHART_VERSION), linted with helm built from hack/tools/helm.
	go run ./hack/helmchart -out dist/chart -version $(CHART_VERSION)
	$(HELM) lint dist/chart --strict

.PHONY: krew
krew: $(KREW) $(VALIDATE_KREW) ## krew and its manifest validator (test/config uses them), built from hack/tools/krew.

.PHONY: lint
lint: $(GOLANGCI_LINT) ## golangci-lint (.golangci.yml), built from hack/tools/lint.
	$(GOLANGCI_LINT) run ./...

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and the manager's RBAC from the markers, and Argo CD's argocd-cm patch.
	$(CONTROLLER_GEN) crd:generateEmbeddedObjectMeta=true rbac:roleName=manager-role paths=./... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	hack/argocd-cm-patch.sh

.PHONY: fmt
fmt: ## go fmt.
	go fmt ./...

.PHONY: vet
vet: ## go vet.
	go vet ./...

.PHONY: verify
verify: generate manifests $(GOLANGCI_LINT) ## Regenerate everything, check gofmt/vet/golangci-lint/kustomize, and fail on any diff.
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	go vet ./...
	$(GOLANGCI_LINT) run ./...
	go mod tidy
	for d in config/default config/operator config/crd config/rbac config/apiserver config/admission config/local config/endpoint config/split config/networkpolicy config/certmanager config/prometheus config/apf config/notifications; do kubectl kustomize $$d >/dev/null; done
	git diff --exit-code -- api config go.mod go.sum
	@test -z "$$(git status --porcelain --untracked-files=all -- api config)" || { git status --porcelain -- api config; echo "untracked generated files"; exit 1; }

##@ Build

.PHONY: build
build: ## Build the manager, the progress CLI and the kubectl plugin.
	go build -o $(BIN)/manager .
	go build -o $(BIN)/workflowtask-progress ./cmd/workflowtask-progress
	go build -o $(BIN)/kubectl-workflowtask ./cmd/kubectl-workflowtask

.PHONY: plugin
plugin: ## The kubectl plugin: bin/kubectl-workflowtask, its krew archive and manifest in dist/plugin (PLUGIN_PLATFORMS, VERSION).
	hack/build-plugin.sh

.PHONY: image
image: ## Build the image without a container engine: OCI layout (linux/amd64+arm64) and tarballs in bin/image.
	go run ./hack/image --img $(IMG) --out $(BIN)/image

.PHONY: image-push
image-push: ## Build the image and push it to IMG (credentials from ~/.docker/config.json).
	go run ./hack/image --img $(IMG) --out $(BIN)/image --push

.PHONY: node-images
node-images: ## The real node's images (the sample worker, the pod sandbox), this platform only, in bin/image/{worker,pause}.
	go run ./hack/image --image worker --img workflowtask-demo-worker:dev --platforms linux/$(GOARCH) --out $(BIN)/image/worker
	go run ./hack/image --image pause --img pause:dev --platforms linux/$(GOARCH) --out $(BIN)/image/pause

.PHONY: build-installer
build-installer: ## Write dist/install.yaml: everything in one file, the image set to IMG.
	IMG=$(IMG) hack/build-installer.sh

##@ Deploy (to the cluster of the current kubeconfig)

.PHONY: install
install: ## Install the CRD only.
	kubectl kustomize config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: ## Delete the CRD (and so every task).
	kubectl kustomize config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: build-installer ## Install the operator from dist/install.yaml (image IMG).
	kubectl apply --server-side -f dist/install.yaml

.PHONY: undeploy
undeploy: ## Delete what dist/install.yaml installed.
	kubectl delete --ignore-not-found -f dist/install.yaml

.PHONY: controlplane
controlplane: ## Build etcd and kube-apiserver from Go modules into $(KUBEBUILDER_ASSETS) (once).
	CONTROLPLANE_DIR=$(KUBEBUILDER_ASSETS) hack/build-controlplane.sh >/dev/null

##@ Test and run

.PHONY: test
test: controlplane cluster test-packages $(KREW) $(VALIDATE_KREW) $(HELM) ## Every test: unit, envtest (real etcd + kube-apiserver) and e2e (a real local cluster).
	go test $(GO_TEST_FLAGS) -timeout 30m ./...

.PHONY: test-packages
test-packages: ## Debian packages the tests drive: tmux and bash-completion (the plugin's terminal tests).
	hack/debian-packages.sh tmux bash-completion

.PHONY: test-e2e
test-e2e: controlplane cluster test-packages ## Only the end-to-end suite: the local cluster, the operator as a process, kubectl and curl.
	go test $(GO_TEST_FLAGS) -timeout 20m -v ./test/e2e/

.PHONY: bench
bench: controlplane ## Benchmarks: the reporter's hot path, freshness through a real API server, the endpoint beside a bare TLS server (wrk), under attack.
	hack/debian-packages.sh wrk
	go test -run '^$$' -bench . -benchmem -cpu 1,2 ./pkg/progress
	go test -run '^$$' -bench Freshness -benchtime 300x ./test/integration/progress
	go test -run '^$$' -bench Handler -benchmem ./test/integration/endpoint
	go test -run '^$$' -bench EndpointVsBareTLS -benchtime 1x ./test/integration/endpoint
	go test -run '^$$' -bench Attack -benchtime 1x ./test/attack
	go test -run '^$$' -bench Streams -benchtime 5x ./test/integration/endpoint

.PHONY: bench-scale
bench-scale: controlplane cluster ## The scale harness (test/scale, loopback, ~60 min): N tasks, M writers writing the status (direct) and pushing to the operator (ingest), with and without config/apf, the cost of a status write, 1,000 tasks finishing with and without a notification sink. SCALE_ARGS to narrow it (e.g. SCALE_ARGS='-bench Notify').
	hack/debian-packages.sh wrk
	go test -run '^$$' -bench 'Scale|Storm|StatusWrite|Notify' -benchtime 1x -timeout 120m -v ./test/scale $(SCALE_ARGS)

.PHONY: bench-attack
bench-attack: controlplane ## Every door attacked (loopback, ~3 min): the owner's latency under closed-loop load alone and under each attack; the stream leak's heap; held connections.
	go test -run '^$$' -bench Attack -benchtime 1x -v ./test/attack

.PHONY: cluster
cluster: ## Build the local cluster's binaries (kube-controller-manager, kube-scheduler, kwok) once.
	hack/local-cluster.sh build

.PHONY: run
run: controlplane cluster build ## The main job: local cluster, operator, sample tasks with demo workers (Ctrl-C stops).
	go build -o $(BIN)/localenv ./hack/localenv
	$(BIN)/localenv --manager $(BIN)/manager
