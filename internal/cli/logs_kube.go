package cli

// Container logs on Kubernetes, through the API server (GetLogs, follow): `scopectl logs
// k8s://CONTEXT/NAMESPACE/NAME` for a Scope deployment's replicas, and `train logs JOB
// --container train|agent` for a training Job's pod.

import (
	"context"
	"fmt"
	"sync"

	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/store"
)

// kubeLogs prints container's log of every replica of the Scope deployment ref
// (k8s://CONTEXT/NAMESPACE/NAME): the last n lines, then with follow what comes, each
// line prefixed with its replica when there are several.
func (a *app) kubeLogs(ctx context.Context, ref, container string, n int, follow bool, emit func([]string) error) error {
	var kf kubeTargetFlags
	c, name, err := kf.client(ref)
	if err != nil {
		return err
	}
	if name == "" {
		name = kubernetes.DefaultName
	}
	reps, err := c.Replicas(ctx, name)
	if err != nil {
		return err
	}
	if len(reps) == 0 {
		return fmt.Errorf("kubernetes: %s has no pods (scaled to zero? `scopectl pod start %s`)", name, ref)
	}
	for _, r := range reps {
		if r.Node == "" {
			// The API server gives an empty log for a pod on no node: say why instead.
			return fmt.Errorf("kubernetes: replica %s is on no node yet (%s: %s)", r.Name, r.Phase, cmpOrString(r.Reason, "no reason given"))
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(reps))
	for i, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Logs(ctx, r.Name, kubernetes.LogOptions{Container: container, Tail: int64(n), Follow: follow}, func(l string) error {
				if len(reps) > 1 {
					l = "[" + r.Name + "] " + l
				}
				mu.Lock()
				defer mu.Unlock()
				return emit([]string{l})
			})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// kubeJobLogs prints container's log of a training job's pod (the newest, ended or not).
func (a *app) kubeJobLogs(ctx context.Context, job store.TrainJob, kubeconfig, container string, follow bool) error {
	tg, name, _, err := kubernetes.ParseMachine(job.Target)
	if err != nil {
		return err
	}
	tg.Kubeconfig = kubeconfig
	c, err := kubernetes.New(tg)
	if err != nil {
		return err
	}
	st, err := c.JobStatus(ctx, name)
	if err != nil {
		return err
	}
	if st.Pod == "" || st.Node == "" {
		// The API server gives an empty log for a pod on no node: say why instead.
		return fmt.Errorf("kubernetes: job %s has no pod on a node yet (%s: %s)", name, st.Phase, cmpOrString(st.Reason, "no reason given"))
	}
	return c.Logs(ctx, st.Pod, kubernetes.LogOptions{Container: container, Follow: follow}, func(l string) error {
		_, err := fmt.Fprintln(a.stdout, l)
		return err
	})
}
