package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/daydreamlive/scopectl/internal/inflight"
	"github.com/daydreamlive/scopectl/internal/scope"
	"github.com/daydreamlive/scopectl/internal/testkit"
)

// TestPageInBrowser opens the page in headless Chromium (Debian's chromium): it sees
// the library, a pod with its GPU chart, a job's loss chart drawn with points, stops
// the pod through the confirmation dialog and sees it EXITED. Screenshots go to
// testdata/screenshots (git-ignored).
func TestPageInBrowser(t *testing.T) {
	bin := testkit.NeedCommand(t, "chromium", "chromium")
	h := newHarness(t, true)
	shots := filepath.Join("testdata", "screenshots")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.WindowSize(1440, 1000), chromedp.Flag("disable-gpu", true), chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(bctx, chromedp.Navigate(h.http.URL+"/#library")); err != nil {
		t.Fatalf("browser: %v", err)
	}
	step := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			shotTo(bctx, filepath.Join(shots, "failed.png"))
			t.Fatalf("%s: %v", what, err)
		}
	}
	evalInt := func(expr string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[int](expr))
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		return v
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		return v
	}
	shot := func(name string) { shotTo(bctx, filepath.Join(shots, name+".png")) }
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	pod := `#pod-cards .pod[data-pod="` + h.podID + `"]`

	step("library", chromedp.WaitVisible(css(`#lib-table tbody tr[data-name="slime-v2_000000500"]`)))
	libRows := evalInt(`document.querySelectorAll("#lib-table tbody tr").length`)
	step("lora detail", chromedp.Click(css(`#lib-table tbody tr[data-name="slime-v2_000000500"]`)), chromedp.WaitVisible(css(`#lib-detail .gallery img`)), chromedp.Sleep(400*time.Millisecond))
	detail := text(`#lib-detail`)
	shot("library")

	step("pods", chromedp.Click(css(`button[data-view="pods"]`)), chromedp.WaitVisible(css(pod)), chromedp.WaitVisible(css(`#gpu-util`)), chromedp.Sleep(700*time.Millisecond))
	gpuPoints := evalInt(`(() => { const c = Chart.getChart("gpu-util"); return c ? c.data.datasets.reduce((n, d) => n + d.data.length, 0) : 0 })()`)
	// Scope's live frame on the card, and Scope's log following below
	step("live frame", chromedp.Poll[chromedp.Void](`(() => { const i = document.querySelector('.frame[data-frame="`+h.podID+`"] img'); return i && i.complete && i.naturalWidth === 512 })()`, chromedp.WithPollingTimeout(15*time.Second)))
	step("pod log", chromedp.Poll[chromedp.Void](`document.querySelector("#pod-log").textContent.includes("Pipeline longlive loaded")`, chromedp.WithPollingTimeout(15*time.Second)),
		chromedp.Poll[chromedp.Void](`document.querySelector("#pod-logs-state").textContent === "live"`, chromedp.WithPollingTimeout(5*time.Second)))
	(&scope.Client{Base: h.scope}).LoadPipeline(context.Background(), "streamdiffusionv2", nil, nil)
	step("pod log follows", chromedp.Poll[chromedp.Void](`document.querySelector("#pod-log").textContent.includes("Pipeline streamdiffusionv2 loaded")`, chromedp.WithPollingTimeout(15*time.Second)))
	// the cost card: pods and network volumes from the ledger, as scopectl cost shows them
	step("cost", chromedp.WaitVisible(css(`#cost-volumes tr[data-volume="nvbigdata"]`)), chromedp.WaitVisible(css(`#cost-pods tr[data-cost-pod="`+h.podID+`"]`)))
	costVols, costPods, costTotal := text(`#cost-volumes tbody`), text(`#cost-pods tbody`), text(`#cost-total`)
	shot("pods")

	// a deploy from the page: it runs in the background, shows its phase, then its result
	step("deploy", chromedp.Click(css(`#deploy-btn`)), chromedp.WaitVisible(css(`#deploy-target`)),
		chromedp.SendKeys(css(`#deploy-target`), h.podID), chromedp.SendKeys(css(`#deploy-pipeline`), "longlive"), chromedp.Sleep(200*time.Millisecond))
	shot("deploy-dialog")
	step("deploy login", chromedp.Click(css(`#dlg-ok`)), chromedp.WaitVisible(css(`#token-input`)),
		chromedp.SendKeys(css(`#token-input`), canaryToken), chromedp.Click(css(`#dlg-ok`)),
		chromedp.WaitVisible(css(`.djob[data-deploy] .pill[data-state]`)))
	shot("deploy-started")
	step("deploy done", chromedp.WaitVisible(css(`.djob[data-deploy] .pill[data-state="done"]`)), chromedp.Sleep(300*time.Millisecond))
	deployText := text(`.djob[data-deploy]`)
	shot("deploy-done")

	step("jobs", chromedp.Click(css(`button[data-view="jobs"]`)), chromedp.WaitVisible(css(`#loss-chart`)), chromedp.WaitVisible(css(`#job-samples img`)),
		chromedp.Poll[chromedp.Void](`document.querySelector("#job-log").textContent.includes("640/1000")`, chromedp.WithPollingTimeout(15*time.Second)), chromedp.Sleep(900*time.Millisecond))
	{
		f, err := os.OpenFile(filepath.Join(h.jobDir, "train.log"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("slime-v2:  64%|██████    | 641/1000 [22:26<12:34,  2.10s/it, lr: 1.0e-04 loss: 1.431e-01]\n")
		f.Close()
	}
	step("job log follows", chromedp.Poll[chromedp.Void](`document.querySelector("#job-log").textContent.includes("641/1000")`, chromedp.WithPollingTimeout(15*time.Second)))
	jobLog := text(`#job-log`)
	lossPoints := evalInt(`(() => { const c = Chart.getChart("loss-chart"); return c ? c.data.datasets[0].data.length : 0 })()`)
	shot("training")

	// an action: stop the pod, through the login and the confirmation
	step("stop", chromedp.Click(css(`button[data-view="pods"]`)), chromedp.WaitVisible(css(pod+` button[data-action="stop"]`)),
		chromedp.Click(css(pod+` button[data-action="stop"]`)), chromedp.WaitVisible(css(`#dlg-ok`)), chromedp.Sleep(300*time.Millisecond))
	shot("confirm-stop")
	step("confirm", chromedp.Click(css(`#dlg-ok`)), // logged in at the deploy
		chromedp.WaitVisible(css(pod+` .pill[data-status="EXITED"]`)), chromedp.Sleep(300*time.Millisecond))
	status := text(pod + ` .pill[data-status]`)
	shot("pod-stopped")
	html := ""
	{
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		html, _ = chromedp.Run(ctx, chromedp.OuterHTML(css("html")))
		cancel()
	}
	// a transfer another scopectl process runs (its registry entry, its process alive)
	sleep := exec.Command("sleep", "60")
	testkit.KillWithParent(sleep)
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	host, _ := os.Hostname()
	e := inflight.Entry{ID: "20261202T080000-0011223344556677", Op: "pull", Item: "cinematic-dolly.safetensors", PID: sleep.Process.Pid, Host: host,
		Done: 612 << 20, Total: 1400 << 20, StartedAt: time.Now().Add(-2 * time.Minute)}
	b, _ := json.Marshal(e)
	os.MkdirAll(string(h.xfers), 0o700)
	os.WriteFile(filepath.Join(string(h.xfers), e.ID+".json"), b, 0o600)
	step("transfers", chromedp.Click(css(`button[data-view="transfers"]`)), chromedp.WaitVisible(css(`tr[data-transfer="cli-`+e.ID+`"]`)), chromedp.Sleep(300*time.Millisecond))
	xferText := text(`tr[data-transfer="cli-` + e.ID + `"]`)
	shot("transfers")
	step("dark theme", chromedp.Click(css(`#theme`)), chromedp.Click(css(`button[data-view="jobs"]`)), chromedp.WaitVisible(css(`#loss-chart`)), chromedp.Sleep(900*time.Millisecond))
	shot("training-dark")
	if libRows != 5 || !strings.Contains(detail, "training") || !strings.Contains(strings.ToLower(detail), "samples (3)") {
		t.Errorf("library: %d rows, detail %q", libRows, detail)
	}
	if gpuPoints < 8 {
		t.Errorf("GPU chart drew %d points", gpuPoints)
	}
	if lossPoints < 600 {
		t.Errorf("loss chart drew %d points", lossPoints)
	}
	if !strings.Contains(deployText, "done") || !strings.Contains(deployText, "Scope at ") || !strings.Contains(deployText, "longlive") {
		t.Errorf("deploy card: %q", deployText)
	}
	if !strings.Contains(costVols, "models") || !strings.Contains(costVols, "100 GB") || !strings.Contains(costVols, "$7.00/mo") ||
		!strings.Contains(costVols, "datasets") || !strings.Contains(costVols, "1500 GB") || !strings.Contains(costVols, "$95.00/mo") ||
		!strings.Contains(costVols, "$2.30") {
		t.Errorf("cost card, volumes: %q", costVols)
	}
	if !strings.Contains(costPods, "scope-a6000") || !strings.Contains(costTotal, "total $") {
		t.Errorf("cost card, pods: %q, total %q", costPods, costTotal)
	}
	if !strings.Contains(jobLog, "HF_TOKEN=") || !strings.Contains(jobLog, "641/1000") {
		t.Errorf("job log: %q", jobLog)
	}
	if !strings.Contains(xferText, "pull") || !strings.Contains(xferText, fmt.Sprintf("pid %d", sleep.Process.Pid)) || !strings.Contains(xferText, "612.0 MiB") {
		t.Errorf("cli transfer row: %q", xferText)
	}
	if status != "EXITED" {
		t.Errorf("pod after stop: %q", status)
	}
	for _, c := range canaries {
		if strings.Contains(html, c) {
			t.Errorf("a canary secret in the page")
		}
	}
}

func shotTo(ctx context.Context, path string) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		os.WriteFile(path, b, 0o644)
	}
}
