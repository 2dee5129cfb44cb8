package cli_test

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/daydreamlive/scopectl/internal/guard"
	"github.com/daydreamlive/scopectl/internal/ledger"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes"
	"github.com/daydreamlive/scopectl/internal/provider/kubernetes/kubetest"
	"github.com/daydreamlive/scopectl/internal/store"
)

// The cost ledger on Kubernetes, against a real kube-apiserver: a deployment's run
// begins when scopectl started it (deploy, pod start: the StatefulSet's started-at) and
// ends at the guard's stop recorded on the StatefulSet — when the guard stopped it, not
// when scopectl next looks (pod ls, pod get, status or cost) — or at scopectl's own
// stop; a stop read again adds nothing, runs never overlap, a listing of one namespace
// leaves another's runs alone. Hours only: the cluster has no price.
func TestKubernetesLedger(t *testing.T) {
	e := newEnv(t)
	k := kubetest.Start(t)
	ns, other := k.Namespace(t), k.Namespace(t)
	t.Setenv("KUBECONFIG", kubetest.Kubeconfig(t, e.root, k.Config, "lab", ns))
	ctx := context.Background()
	id := "k8s://lab/" + ns + "/scope"
	kc, err := kubernetes.NewForConfig(k.Config, ns)
	if err != nil {
		t.Fatal(err)
	}
	annoTime := func(key string) time.Time {
		t.Helper()
		sts, err := k.CS.AppsV1().StatefulSets(ns).Get(ctx, "scope", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339, sts.Annotations[key])
		if err != nil {
			t.Fatalf("annotation %s: %v", key, err)
		}
		return at
	}
	// untilNextSecond makes the next annotation (RFC 3339: seconds) later than the last.
	untilNextSecond := func() { time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1100 * time.Millisecond))) }
	guardStop := func() time.Time {
		t.Helper()
		untilNextSecond()
		st := guard.Stop{By: "guard", Kind: guard.KindIdle, Reason: "idle 30m0s (idle-stop 30m0s)", At: time.Now()}
		if err := (guard.KubernetesStopper{Client: kc, StatefulSet: "scope"}).StopFor(ctx, st); err != nil {
			t.Fatal(err)
		}
		return annoTime(kubernetes.AnnoStoppedAt)
	}
	report := func() ledger.Report {
		t.Helper()
		var rep ledger.Report
		if err := json.Unmarshal([]byte(e.mustRun("cost", "--json")), &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	podLine := func(rep ledger.Report, key string) ledger.Line {
		for _, l := range rep.Pods {
			if l.Key == key {
				return l
			}
		}
		t.Fatalf("no line of %s in %+v", key, rep.Pods)
		return ledger.Line{}
	}
	lastStop := func() *store.Run {
		t.Helper()
		var v struct {
			LastStop *store.Run `json:"last_stop"`
		}
		if err := json.Unmarshal([]byte(e.mustRun("pod", "get", id, "--json")), &v); err != nil {
			t.Fatal(err)
		}
		return v.LastStop
	}

	e.mustRun("deploy", "--provider", "kubernetes", "--replicas", "2", "--wait", "0")
	start := annoTime(kubernetes.AnnoStartedAt)
	e.mustRun("pod", "ls", "--provider", "kubernetes") // the run opens
	// The guard stops it; scopectl looks only later.
	stop := guardStop()
	time.Sleep(1500 * time.Millisecond)
	looked := time.Now()
	out := e.mustRun("pod", "ls", "--provider", "kubernetes")
	if !strings.Contains(out, "EXITED") {
		t.Fatalf("pod ls after the guard's stop:\n%s", out)
	}
	t.Logf("pod get after the guard's stop:\n%s", e.mustRun("pod", "get", id))
	ls := lastStop()
	if ls == nil || ls.EndSource != ledger.EndGuard || !ls.EndedAt.Equal(stop) || !ls.StartedAt.Equal(start) || ls.EndReason != "idle 30m0s (idle-stop 30m0s)" {
		t.Fatalf("the guard's stop in the ledger: %+v (started %s, stopped %s)", ls, start, stop)
	}
	line := podLine(report(), id)
	if math.Abs(line.Hours*3600-stop.Sub(start).Seconds()) > 0.01 || line.Running || line.Dollars != 0 || line.Storage != 0 {
		t.Fatalf("cost of %s: %+v; ran %s until the guard's stop, looked %s after it", id, line, stop.Sub(start), looked.Sub(stop).Round(time.Millisecond))
	}
	t.Logf("run %s → guard's stop %s: %.0f s counted, looked %s later", start.Format(time.TimeOnly), stop.Format(time.TimeOnly), line.Hours*3600, looked.Sub(stop).Round(time.Millisecond))
	// Read again and again: the same one run.
	e.mustRun("status", id)
	e.mustRun("pod", "ls", "--provider", "kubernetes")
	if l := podLine(report(), id); l.Hours != line.Hours {
		t.Fatalf("the stop read again changed the run: %+v, was %+v", l, line)
	}

	// pod start: a new run from then (the guard's old stop still on the StatefulSet
	// ends nothing of it); then the guard again, seen first by cost.
	untilNextSecond()
	e.mustRun("pod", "start", id)
	start2 := annoTime(kubernetes.AnnoStartedAt)
	if !start2.After(stop) {
		t.Fatalf("started again at %s, before the stop %s", start2, stop)
	}
	e.mustRun("pod", "ls", "--provider", "kubernetes")
	if l := podLine(report(), id); !l.Running {
		t.Fatalf("started again: %+v", l)
	}
	stop2 := guardStop()
	time.Sleep(time.Second)
	rep := report()
	want := stop.Sub(start) + stop2.Sub(start2)
	if l := podLine(rep, id); l.Running || math.Abs(l.Hours*3600-want.Seconds()) > 0.01 {
		t.Fatalf("cost after the second guard stop (read by cost): %+v, want %s", l, want)
	}
	if ls := lastStop(); ls == nil || ls.EndSource != ledger.EndGuard || !ls.EndedAt.Equal(stop2) || !ls.StartedAt.Equal(start2) {
		t.Fatalf("last stop %+v", ls)
	}

	// Another namespace: its run is not ended by a listing of this one; scopectl's own
	// stop ends it exactly.
	e.mustRun("deploy", "--provider", "kubernetes", "-n", other, "--wait", "0")
	e.mustRun("pod", "ls", "--provider", "kubernetes", "-n", other)
	untilNextSecond()
	e.mustRun("pod", "start", id)
	e.mustRun("pod", "ls", "--provider", "kubernetes")
	if l := podLine(report(), "k8s://lab/"+other+"/scope"); !l.Running {
		t.Fatalf("the other namespace's run after a listing of %s: %+v", ns, l)
	}
	e.mustRun("pod", "stop", "k8s://lab/"+other+"/scope")
	var v struct {
		LastStop *store.Run `json:"last_stop"`
	}
	if err := json.Unmarshal([]byte(e.mustRun("pod", "get", "k8s://lab/"+other+"/scope", "--json")), &v); err != nil || v.LastStop == nil || v.LastStop.EndSource != ledger.EndScopectl {
		t.Fatalf("pod stop in the ledger: %+v %v", v.LastStop, err)
	}
	// pod rm ends the running one.
	e.mustRun("pod", "rm", id, "--yes")
	t.Logf("cost:\n%s", e.mustRun("cost"))
	rep = report()
	if l := podLine(rep, id); l.Running {
		t.Fatalf("after pod rm: %+v", l)
	}
	if rep.Total.Dollars != 0 || rep.Estimated != 0 {
		t.Fatalf("total %+v, %d estimated ends", rep.Total, rep.Estimated)
	}
}
