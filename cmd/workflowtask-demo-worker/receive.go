package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// maxEventBody bounds an event the receiver reads.
const maxEventBody = 1 << 20

// receiveEvents serves a plain CloudEvents webhook on addr until SIGTERM: every event (binary
// or structured) is decoded with the CloudEvents SDK and printed as one JSON line on stdout
// ({"id","type","source","subject","time","data"}), answered 200; anything else is answered 400.
// It is the sample sink of docs/notifications.md and the real node's receiver pod.
func receiveEvents(addr string) int {
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxEventBody)
		ev, err := cehttp.NewEventFromHTTPRequest(r)
		if err != nil {
			http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		err = enc.Encode(map[string]any{"id": ev.ID(), "type": ev.Type(), "source": ev.Source(), "subject": ev.Subject(),
			"time": ev.Time(), "data": json.RawMessage(ev.Data())})
		mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	fmt.Fprintln(os.Stderr, "workflowtask-demo-worker: receiving CloudEvents on", addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "workflowtask-demo-worker:", err)
		return 1
	}
	return 0
}
