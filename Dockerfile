# The operator image: the manager (controller + progress endpoint), and the progress CLI that
# job pods can run as a sidecar. `docker build -t workflowtask-operator:dev .`
# `make image` builds the same image without a container engine (internal/image: the same
# binaries, build flags, paths, user and entrypoint — TestDockerfileAgrees keeps them equal).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w -buildid=" -o /out/manager . && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w -buildid=" -o /out/workflowtask-progress ./cmd/workflowtask-progress

# Nothing but the two static binaries: no shell, no package manager.
FROM scratch
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/manager"]
