package testenv

import (
	"context"
	"testing"

	"github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// UpdateJobStatus changes a Job's status as the Job controller would (envtest runs none): it
// reads the Job, applies mutate and writes the status, again on a conflict.
func UpdateJobStatus(t testing.TB, c client.Client, job *batchv1.Job, mutate func(*batchv1.JobStatus)) {
	t.Helper()
	gomega.NewWithT(t).Eventually(func() error {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(job), job); err != nil {
			return err
		}
		mutate(&job.Status)
		return c.Status().Update(context.Background(), job)
	}).Should(gomega.Succeed())
}
