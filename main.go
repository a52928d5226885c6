// Command manager runs the workflowtask-operator: the WorkflowTask controller and, in the same
// process, the progress endpoint (GET /workflow/progress/{id}, also aggregated).
package main

import (
	"errors"
	"flag"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	workflowv1alpha1 "github.com/taskops/workflowtask-operator/api/v1alpha1"
	"github.com/taskops/workflowtask-operator/apiserver"
	"github.com/taskops/workflowtask-operator/controllers"
	"github.com/taskops/workflowtask-operator/internal/servingcert"
)

var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(workflowv1alpha1.AddToScheme(scheme))
}

func main() {
	var (
		leaderElect   bool
		leaderElectNS string
		kubeAPIQPS    float64
		kubeAPIBurst  int
		pprofAddr     string
	)
	flag.BoolVar(&leaderElect, "leader-elect", false,
		"Elect a leader so that only one replica reconciles (the deployment turns this on).")
	flag.StringVar(&leaderElectNS, "leader-election-namespace", "",
		"Namespace of the leader-election Lease; defaults to the pod's namespace.")
	flag.Float64Var(&kubeAPIQPS, "kube-api-qps", -1,
		"Requests per second the manager may send to kube-apiserver; negative: no client-side limit, kube-apiserver's API Priority and Fairness decides (controller-runtime's default).")
	flag.IntVar(&kubeAPIBurst, "kube-api-burst", 30, "Requests the manager may send at once above --kube-api-qps (when that is not negative).")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0",
		"Address Go's /debug/pprof handlers bind to (plain HTTP, unauthenticated: loopback only); 0 disables them.")
	ctrlOpts := controllers.NewOptions()
	ctrlOpts.AddFlags(flag.CommandLine)
	progressOpts := apiserver.NewOptions()
	progressOpts.AddFlags(flag.CommandLine)
	certOpts := servingcert.NewOptions()
	certOpts.AddFlags(flag.CommandLine)
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	setupLog := ctrl.Log.WithName("setup")
	if err := apiserver.LoopbackOnly(pprofAddr); err != nil {
		setupLog.Error(err, "Invalid --pprof-bind-address")
		os.Exit(1)
	}
	if err := errors.Join(ctrlOpts.Validate(), progressOpts.Validate()); err != nil {
		setupLog.Error(err, "Invalid options")
		os.Exit(1)
	}

	restConfig := ctrl.GetConfigOrDie()
	restConfig.QPS, restConfig.Burst = float32(kubeAPIQPS), kubeAPIBurst // (GetConfig's own default: QPS -1)
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: scheme,
		// The metrics port and the health probes are served by the progress endpoint's server,
		// behind the same front door (apiserver.Options: --metrics-bind-address,
		// --health-probe-bind-address).
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "workflowtask-operator.taskops.dev",
		LeaderElectionNamespace: leaderElectNS,
		// A replica that stops cleanly hands the lease over at once instead of after it expires.
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(),
	})
	if err != nil {
		setupLog.Error(err, "Unable to create manager")
		os.Exit(1)
	}
	if ctrlOpts.Enabled {
		reconciler := controllers.NewWorkflowTaskReconciler(mgr, *ctrlOpts)
		if progressOpts.Ingest {
			// Tasks' pods push to the endpoint: they get its URL, its CA bundle (the one the
			// serving certificate publishes unless --progress-ingest-ca-file) and a token for it.
			var bundle types.NamespacedName
			if certOpts.Enabled() && certOpts.BundleConfigMap != "" {
				bundle = certOpts.BundleConfigMapName()
			}
			if reconciler.Pods.Ingest, err = ctrlOpts.IngestDefaults(mgr.GetAPIReader(), bundle); err != nil {
				setupLog.Error(err, "Invalid options")
				os.Exit(1)
			}
		}
		notifyCfg, err := ctrlOpts.Notify.Load() // validated above
		if err == nil {
			err = reconciler.SetupNotifier(mgr, notifyCfg)
		}
		if err != nil {
			setupLog.Error(err, "Unable to set up notifications")
			os.Exit(1)
		}
		if err := reconciler.SetupWithManager(mgr, controller.Options{MaxConcurrentReconciles: ctrlOpts.Workers}); err != nil {
			setupLog.Error(err, "Unable to set up the WorkflowTask controller")
			os.Exit(1)
		}
		metrics.Registry.MustRegister(controllers.NewPhaseCollector(mgr.GetCache()))
	}
	if !ctrlOpts.Enabled && !progressOpts.Enabled() {
		setupLog.Error(nil, "Nothing to run: --controllers=false and --progress-bind-address=0")
		os.Exit(1)
	}
	var readyChecks []func(*apiserver.Server)
	ctx := ctrl.SetupSignalHandler()
	var useCert []func(*apiserver.Config)
	if certOpts.Enabled() {
		certOpts.DNSNames = progressOpts.DNSNames
		// The metrics port serves the same certificate (ServiceMonitors verify it with the
		// operator's CA bundle), also where the endpoint runs elsewhere (config/split).
		serve := (progressOpts.Enabled() || progressOpts.MetricsServesTLS()) && progressOpts.TLSCertFile == ""
		source, err := servingcert.Setup(mgr, certOpts, serve)
		if err != nil {
			setupLog.Error(err, "Unable to set up the serving certificate")
			os.Exit(1)
		}
		if source != nil {
			useCert = append(useCert, func(c *apiserver.Config) { c.GetCertificate = source.GetCertificate })
			readyChecks = append(readyChecks, func(s *apiserver.Server) { s.AddReadyzCheck("serving-cert", source.Ready) })
		}
	}
	server, err := apiserver.SetupWithManager(ctx, mgr, progressOpts, useCert...)
	if err != nil {
		setupLog.Error(err, "Unable to set up the progress endpoint")
		os.Exit(1)
	}
	server.AddHealthzCheck("healthz", healthz.Ping)
	server.AddReadyzCheck("readyz", healthz.Ping)
	for _, add := range readyChecks {
		add(server)
	}

	setupLog.Info("Starting manager")
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "Manager exited with an error")
		os.Exit(1)
	}
}
