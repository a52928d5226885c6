package testenv

import (
	"context"
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/taskops/workflowtask-operator/controllers"
)

// StartManager runs the WorkflowTask controller as main.go does, authenticated as the
// operator's ServiceAccount bound to config/rbac/role.yaml (see ManagerConfig), until ctx ends.
// configure, when given, adds more to the manager (e.g. the progress endpoint).
func StartManager(ctx context.Context, admin *rest.Config, configure ...func(ctrl.Manager) error) (ctrl.Manager, error) {
	return StartManagerWith(ctx, admin, ManagerSetup{Configure: configure})
}

// ManagerSetup is what StartManagerWith changes in the manager main.go would run.
type ManagerSetup struct {
	// Cache, when set, changes the cache's options (e.g. the namespaces it watches, so that
	// two controllers in one API server reconcile different tasks).
	Cache func(*cache.Options)
	// Reconciler, when set, changes the reconciler before it is set up (e.g. its pod defaults),
	// with the manager to read through.
	Reconciler func(ctrl.Manager, *controllers.WorkflowTaskReconciler) error
	// Configure adds more to the manager (e.g. the progress endpoint).
	Configure []func(ctrl.Manager) error
	// Stopped, when set, is closed once the manager stopped (its context ended).
	Stopped chan<- struct{}
}

// StartManagerWith is StartManager with the changes of setup.
func StartManagerWith(ctx context.Context, admin *rest.Config, setup ManagerSetup) (ctrl.Manager, error) {
	mgrCfg, err := ManagerConfig(ctx, admin)
	if err != nil {
		return nil, err
	}
	cacheOpts := controllers.CacheOptions()
	if setup.Cache != nil {
		setup.Cache(&cacheOpts)
	}
	mgr, err := ctrl.NewManager(mgrCfg, ctrl.Options{
		Scheme:                 Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cacheOpts,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	opts := controllers.NewOptions()
	opts.ProgressImage = "workflowtask-operator:test"
	r := controllers.NewWorkflowTaskReconciler(mgr, *opts)
	if setup.Reconciler != nil {
		if err := setup.Reconciler(mgr, r); err != nil {
			return nil, fmt.Errorf("setting up the reconciler: %w", err)
		}
	}
	if err := r.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: 4, SkipNameValidation: ptr.To(true)}); err != nil {
		return nil, fmt.Errorf("setting up the controller: %w", err)
	}
	for _, c := range setup.Configure {
		if err := c(mgr); err != nil {
			return nil, err
		}
	}
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager stopped:", err)
		}
		if setup.Stopped != nil {
			close(setup.Stopped)
		}
	}()
	return mgr, nil
}
