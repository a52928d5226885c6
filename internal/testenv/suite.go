package testenv

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Suite is what an envtest suite's TestMain sets up, where suites differ: everything else
// (flags, gomega defaults, the control plane, an admin client, the manager, stopping it all)
// is Main's.
type Suite struct {
	// Eventually is gomega's default Eventually timeout (default 30 s), polled every Polling
	// (default 50 ms).
	Eventually, Polling time.Duration
	// Configure adjusts the environment before it starts (API server flags, a fixed cert dir).
	Configure func(*envtest.Environment) error
	// BeforeManager runs once the API server is up, before the manager starts (e.g. install an
	// admission policy and wait for it).
	BeforeManager func(ctx context.Context, e *Env) error
	// Manager starts the operator's manager (the controller, as the operator's ServiceAccount),
	// changed by ManagerSetup.
	Manager      bool
	ManagerSetup ManagerSetup
}

// Env is a running suite: the control plane, an admin config and client, and the manager
// (nil without one).
type Env struct {
	Environment *envtest.Environment
	Admin       *rest.Config
	Client      client.Client
	Manager     ctrl.Manager
}

// Main runs a suite for TestMain: os.Exit(testenv.Main(m, suite, func(e *testenv.Env) {…})).
// ready receives the running Env before the tests run.
func Main(m *testing.M, s Suite, ready func(*Env)) int {
	flag.Parse()
	gomega.SetDefaultEventuallyTimeout(or(s.Eventually, 30*time.Second))
	gomega.SetDefaultEventuallyPollingInterval(or(s.Polling, 50*time.Millisecond))
	fail := func(err error) int { fmt.Fprintln(os.Stderr, err); return 1 }

	environment, err := New()
	if err != nil {
		return fail(err)
	}
	if s.Configure != nil {
		if err := s.Configure(environment); err != nil {
			return fail(err)
		}
	}
	e := &Env{Environment: environment}
	if e.Admin, err = environment.Start(); err != nil {
		return fail(fmt.Errorf("starting the control plane: %w", err))
	}
	defer func() { _ = environment.Stop() }()
	if e.Client, err = client.New(e.Admin, client.Options{Scheme: Scheme}); err != nil {
		return fail(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if s.BeforeManager != nil {
		if err := s.BeforeManager(ctx, e); err != nil {
			return fail(err)
		}
	}
	if s.Manager {
		if e.Manager, err = StartManagerWith(ctx, e.Admin, s.ManagerSetup); err != nil {
			return fail(err)
		}
	}
	ready(e)
	return m.Run()
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
