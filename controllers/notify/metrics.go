package notify

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	delivered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "workflowtask_notifications_delivered_total",
		Help: "Announcements (CloudEvents) a sink took (2xx), by sink.",
	}, []string{"sink"})
	failedAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "workflowtask_notification_attempts_failed_total",
		Help: "Attempts to send an announcement that failed and will be retried, by sink and reason (connection, timeout, redirect, status_4xx for 408/429, status_5xx).",
	}, []string{"sink", "reason"})
	dropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "workflowtask_notifications_dropped_total",
		Help: "Announcements never delivered, by sink and reason: rejected (the sink answered a 4xx other than 408/429), outbox_full (more undelivered than a task's record keeps).",
	}, []string{"sink", "reason"})
	deliverySeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "workflowtask_notification_delivery_seconds",
		Help:    "Time from an announcement being made to a sink taking it, by sink.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
	}, []string{"sink"})
)

func init() {
	metrics.Registry.MustRegister(delivered, failedAttempts, dropped, deliverySeconds)
}

// Dropped counts announcements of a task that were never delivered to sink for reason.
func Dropped(sink, reason string, n int) { dropped.WithLabelValues(sink, reason).Add(float64(n)) }
