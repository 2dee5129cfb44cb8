package server

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/daydreamlive/scopectl/internal/provider"
	"github.com/daydreamlive/scopectl/internal/train"
)

// metrics are scopectl's Prometheus series: base units, scopectl_ prefix, labels
// pod, gpu, job and (network) volume ids, and a cost's kind, only (never a file name
// or a step).
type metrics struct {
	s             *Server
	transferBytes prometheus.Counter
	transfers     *prometheus.CounterVec
	actions       *prometheus.CounterVec
	panics        prometheus.Counter

	gpuUtil, gpuMemUsed, gpuMemTotal, gpuPower, gpuTemp *prometheus.Desc
	podPrice, podCost, podUptime, podUp, podIdle        *prometheus.Desc
	scopeUp, scopeFPS, scopeSessions                    *prometheus.Desc
	trainStep, trainTotal, trainLoss, trainLR           *prometheus.Desc
	trainSpeed, trainETA, trainRunning, trainCkpts      *prometheus.Desc
	trainCost, loras                                    *prometheus.Desc
	volumeCost, volumePrice, volumeSize, ledgerCost     *prometheus.Desc
}

func newMetrics(s *Server) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("scopectl_"+name, help, labels, nil)
	}
	m := &metrics{s: s,
		transferBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "scopectl_transfer_bytes_total", Help: "LoRA bytes sent by syncs this server started."}),
		transfers:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scopectl_transfers_total", Help: "Syncs this server finished, by result."}, []string{"result"}),
		actions:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scopectl_actions_total", Help: "Actions taken through the API."}, []string{"action"}),
		panics:        prometheus.NewCounter(prometheus.CounterOpts{Name: "scopectl_http_panics_total", Help: "Handler panics recovered (each answered 500)."}),

		gpuUtil:     d("gpu_utilization_ratio", "GPU utilisation, 0-1.", "pod", "gpu"),
		gpuMemUsed:  d("gpu_memory_used_bytes", "GPU memory in use.", "pod", "gpu"),
		gpuMemTotal: d("gpu_memory_total_bytes", "GPU memory.", "pod", "gpu"),
		gpuPower:    d("gpu_power_watts", "GPU power draw.", "pod", "gpu"),
		gpuTemp:     d("gpu_temperature_celsius", "GPU temperature.", "pod", "gpu"),

		podPrice:  d("pod_price_dollars_per_hour", "What the pod costs per hour while it runs.", "pod", "gpu_type"),
		podCost:   d("pod_cost_dollars_total", "GPU cost of the pod's current run so far.", "pod"),
		podUptime: d("pod_uptime_seconds_total", "Time since the pod's last start, while it runs.", "pod"),
		podUp:     d("pod_running", "1 while the pod runs.", "pod"),
		podIdle:   d("pod_idle_seconds", "Time since the pod's GPU or Scope last did work.", "pod"),

		scopeUp:       d("scope_up", "1 when Scope answers /health.", "pod"),
		scopeFPS:      d("scope_output_fps", "Frames per second Scope's streaming sessions put out, summed.", "pod"),
		scopeSessions: d("scope_sessions", "Scope's active streaming sessions.", "pod"),

		trainStep:    d("train_step", "The step the training job reached.", "job"),
		trainTotal:   d("train_total_steps", "The steps the training job runs.", "job"),
		trainLoss:    d("train_loss", "The training job's last logged loss.", "job"),
		trainLR:      d("train_learning_rate", "The training job's learning rate.", "job"),
		trainSpeed:   d("train_seconds_per_step", "Seconds per training step.", "job"),
		trainETA:     d("train_eta_seconds", "Estimated time to the last step.", "job"),
		trainRunning: d("train_running", "1 while the training job has not ended.", "job"),
		trainCkpts:   d("train_checkpoints", "Checkpoints the supervisor staged.", "job"),
		trainCost:    d("train_cost_dollars_total", "The training job's machine cost so far.", "job"),
		loras:        d("library_loras", "LoRAs in the library."),

		// from the cost ledger, as `scopectl cost` reports it (volume: RunPod's id)
		volumeCost:  d("volume_cost_dollars_total", "Storage cost of the network volume so far (scopectl cost's VOLUME line).", "volume"),
		volumePrice: d("volume_price_dollars_per_month", "What the network volume costs per month at its size, at RunPod's published rate (while it exists).", "volume"),
		volumeSize:  d("volume_size_bytes", "The network volume's size (while it exists).", "volume"),
		ledgerCost:  d("cost_dollars_total", "Spent in all, per the cost ledger (scopectl cost's TOTAL), by kind: gpu or storage.", "kind"),
	}
	s.reg.MustRegister(m, m.transferBytes, m.transfers, m.actions, m.panics,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: "scopectl"}))
	bi := prometheus.NewGauge(prometheus.GaugeOpts{Name: "scopectl_build_info", Help: "scopectl's version; always 1.",
		ConstLabels: prometheus.Labels{"version": s.opt.Version, "goversion": runtime.Version()}})
	bi.Set(1)
	s.reg.MustRegister(bi)
	return m
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.gpuUtil, m.gpuMemUsed, m.gpuMemTotal, m.gpuPower, m.gpuTemp, m.podPrice, m.podCost,
		m.podUptime, m.podUp, m.podIdle, m.scopeUp, m.scopeFPS, m.scopeSessions, m.trainStep, m.trainTotal, m.trainLoss, m.trainLR,
		m.trainSpeed, m.trainETA, m.trainRunning, m.trainCkpts, m.trainCost, m.loras, m.volumeCost, m.volumePrice, m.volumeSize, m.ledgerCost} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it reads the sampler's last readings, so a
// scrape costs no request to a pod.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	c := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	s := m.s
	items, _ := s.podItemsCached()
	for _, it := range items {
		id := it.ID
		running := 0.0
		if it.Status == provider.StatusRunning {
			running = 1
		}
		g(m.podUp, running, id)
		if id != LocalPod {
			g(m.podPrice, it.CostPerHr, id, it.GPUType)
			c(m.podCost, it.CostSoFar, id)
			c(m.podUptime, it.UptimeS, id)
		}
		if running == 1 {
			g(m.podIdle, it.IdleS, id)
		}
		for _, x := range it.GPUs {
			gi := strconv.Itoa(x.Index)
			g(m.gpuUtil, float64(x.UtilizationPct)/100, id, gi)
			g(m.gpuMemUsed, float64(x.MemoryUsedMiB*mib), id, gi)
			g(m.gpuMemTotal, float64(x.MemoryTotalMiB*mib), id, gi)
			g(m.gpuPower, x.PowerW, id, gi)
			g(m.gpuTemp, float64(x.TemperatureC), id, gi)
		}
		if it.Scope != nil {
			up := 0.0
			if it.Scope.Up {
				up = 1
			}
			g(m.scopeUp, up, id)
			g(m.scopeFPS, it.Scope.OutputFPS, id)
			g(m.scopeSessions, float64(it.Scope.Sessions), id)
		}
	}
	s.mu.RLock()
	for id, j := range s.jobs {
		c(m.trainCost, j.res.Cost, id)
		running := 0.0
		if j.res.Job.EndedAt == nil {
			running = 1
		}
		st := j.res.State
		if st == nil {
			g(m.trainStep, float64(j.res.Job.Step), id)
			g(m.trainRunning, running, id)
			continue
		}
		if train.Terminal(st.Phase) {
			running = 0
		}
		g(m.trainRunning, running, id)
		g(m.trainStep, float64(st.Step), id)
		g(m.trainTotal, float64(st.Total), id)
		if st.Loss != nil {
			g(m.trainLoss, *st.Loss, id)
		}
		g(m.trainLR, st.LR, id)
		if st.SecPerIt > 0 {
			g(m.trainSpeed, st.SecPerIt, id)
			if st.Total > st.Step && running == 1 {
				g(m.trainETA, float64(st.Total-st.Step)*st.SecPerIt, id)
			}
		}
		g(m.trainCkpts, float64(len(st.Checkpoints)), id)
	}
	s.mu.RUnlock()
	if n, ok := s.loraCount(); ok {
		g(m.loras, float64(n))
	}
	if _, ok := s.ledgerStore(); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rep, err := s.costReport(ctx, time.Time{})
		cancel()
		if err == nil {
			c(m.ledgerCost, rep.Total.GPUDollars, "gpu")
			c(m.ledgerCost, rep.Total.Storage, "storage")
			for _, v := range rep.Volumes {
				c(m.volumeCost, v.Storage, v.Key)
				if v.Running {
					g(m.volumePrice, v.Monthly, v.Key)
					g(m.volumeSize, float64(v.SizeGB)*gb, v.Key)
				}
			}
		}
	}
}

// gb is RunPod's GB (it bills per 10^9 bytes).
const gb = 1e9

func (s *Server) metricsHandler() http.Handler {
	h := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.opt.OpenReads && !s.authorized(r) {
			s.writeJSON(w, http.StatusUnauthorized, apiError{"unauthorized"})
			return
		}
		h.ServeHTTP(w, r)
	})
}
