package kubernetes_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
)

// What the cost ledger reads off a StatefulSet: when scopectl last started it (a
// deploy that creates it or scales it up from zero, pod start; kept by a deploy of a
// running one, which stays "unchanged") and the guard's last stop (kept by a deploy).
func TestStartedAtAndGuardStop(t *testing.T) {
	t.Parallel()
	e, c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	started := func() string {
		t.Helper()
		sts, err := e.CS.AppsV1().StatefulSets(c.Namespace).Get(ctx, "scope", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return sts.Annotations[kubernetes.AnnoStartedAt]
	}
	nextSecond := func() { time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond))) }
	t0 := time.Now().Truncate(time.Second)
	if _, err := c.Apply(ctx, spec(), kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	s1 := started()
	at, err := time.Parse(time.RFC3339, s1)
	if err != nil || at.Before(t0) || at.After(time.Now()) {
		t.Fatalf("started-at %q after a create at %s: %v", s1, t0, err)
	}
	ds, err := c.Deployments(ctx, "")
	if err != nil || len(ds) != 1 || !ds[0].StartedAt.Equal(at) || ds[0].GuardStop != nil || ds[0].Status != provider.StatusRunning {
		t.Fatalf("deployments: %+v %v", ds, err)
	}
	nextSecond()
	applied, err := c.Apply(ctx, spec(), kubernetes.ApplyOptions{})
	if err != nil || actions(applied[len(applied)-1:]) != "StatefulSet=unchanged" || started() != s1 {
		t.Fatalf("a deploy of the running one: %s, started-at %q (was %q): %v", actions(applied), started(), s1, err)
	}
	stopAt := time.Now().Truncate(time.Second)
	if err := c.GuardStop(ctx, "scope", "guard (idle)", "idle 30m", stopAt); err != nil {
		t.Fatal(err)
	}
	ds, err = c.Deployments(ctx, "scope")
	if err != nil || len(ds) != 1 || ds[0].Status != provider.StatusExited || ds[0].GuardStop == nil ||
		!ds[0].GuardStop.At.Equal(stopAt) || ds[0].GuardStop.Reason != "idle 30m" || ds[0].GuardStop.By != "guard (idle)" {
		t.Fatalf("after the guard's stop: %+v %v", ds, err)
	}
	// A deploy starts it again: a new start; the guard's last stop stays.
	nextSecond()
	if _, err := c.Apply(ctx, spec(), kubernetes.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	ds, _ = c.Deployments(ctx, "scope")
	if s2 := started(); s2 == s1 || len(ds) != 1 || ds[0].GuardStop == nil || !ds[0].StartedAt.After(stopAt) || ds[0].Status != provider.StatusRunning {
		t.Fatalf("deploy after the guard's stop: started-at %q (was %q), %+v", s2, s1, ds)
	}
	// pod stop keeps the start; pod start makes a new one.
	s2 := started()
	if err := c.Stop(ctx, "scope"); err != nil || started() != s2 {
		t.Fatalf("stop: started-at %q, was %q: %v", started(), s2, err)
	}
	nextSecond()
	if err := c.Start(ctx, "scope"); err != nil || started() == s2 {
		t.Fatalf("start: started-at %q, was %q: %v", started(), s2, err)
	}
	if _, err := c.Deployments(ctx, "nope"); err == nil {
		t.Fatal("a deployment that is not there")
	}
}
