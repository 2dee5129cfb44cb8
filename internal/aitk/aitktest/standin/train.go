package main

import (
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(strings.TrimSpace(os.Getenv(name))); err == nil {
		return v
	}
	return def
}

func envMs(name string, def int) time.Duration {
	return time.Duration(envInt(name, def)) * time.Millisecond
}

func envOn(name string) bool {
	v := strings.ToLower(strings.TrimSpace(os.Getenv(name)))
	return v != "" && v != "0" && v != "false" && v != "no"
}

// ---- the job (toolkit/job.py get_job, jobs/ExtensionJob.py) ----

type job struct {
	name  string
	procs []*trainer
}

func (j *job) onError(e error, kbd bool) { j.procs[0].onError(e, kbd) }

func (j *job) run() {
	println("")
	println("#############################################")
	println("# Running job: " + j.name)
	println("#############################################")
	println("")
	println("")
	s := "es"
	if len(j.procs) == 1 {
		s = ""
	}
	printf("Running  %d process%s", len(j.procs), s)
	for _, p := range j.procs {
		p.run()
	}
}

var jobFrames = []string{frame("toolkit/job.py", 28, "get_job", "return ExtensionJob(config)")}

func newJob(cfg *omap) *job {
	jv, _ := cfg.get("job")
	fr := []string{frame("toolkit/job.py", 11, "get_job", "config = get_config(config_path, name)")}
	if !pyTruthy(jv) {
		raise(pyErr("ValueError", `config file is invalid. Missing "job" key`, fr...))
	}
	switch pyStr(jv) {
	case "extension":
	case "train", "extract", "mod", "generate":
		raise(pyErr("NotImplementedError", "the ai-toolkit stand-in simulates only job: extension, not "+pyStr(jv)))
	default:
		raise(pyErr("ValueError", "Unknown job type "+pyStr(jv), frame("toolkit/job.py", 38, "get_job", "raise ValueError(f'Unknown job type {job}')")))
	}
	c := cfg.sub("config")
	if !c.has("name") {
		raise(pyErr("ValueError", `config file error. Missing "config.name" key`, jobFrames...))
	}
	j := &job{name: pyStr(c.vals["name"])}
	meta := newOmap()
	if m, ok := cfg.get("meta"); ok {
		if mm, ok := m.(*omap); ok {
			meta = replaceTag(mm, "\x00", "\x00").(*omap) // deep copy
		}
	}
	pv, ok := c.get("process")
	if !ok {
		raise(pyErr("ValueError", `config file is invalid. Missing "config.process" key`, jobFrames...))
	}
	pl, _ := pv.([]any)
	if len(pl) == 0 {
		raise(pyErr("ValueError", `config file is invalid. "config.process" must be a list of processes`, jobFrames...))
	}
	for i, pi := range pl {
		pc, _ := pi.(*omap)
		if pc == nil || !pc.has("type") {
			raise(pyErr("ValueError", fmt.Sprintf(`config file is invalid. Missing "config.process[%d].type" key`, i), jobFrames...))
		}
		typ := pyStr(pc.vals["type"])
		switch typ {
		case "diffusion_trainer", "sd_trainer", "ui_trainer":
		default:
			raise(pyErr("ValueError", "config file is invalid. Unknown process type: "+typ, jobFrames...))
		}
		j.procs = append(j.procs, newTrainer(i, j, cfg, pc, meta, typ))
	}
	return j
}

// ---- the process (BaseProcess → BaseTrainProcess → BaseSDTrainProcess →
// SDTrainer → DiffusionTrainer) ----

type sampleItem struct {
	prompt        string
	width, height int
	numFrames     int
	fps           int
}

type dataset struct {
	path           string
	resolution     any
	numFrames      int
	autoFrameCount bool
	fps            int
	repeats        int
	cacheLatents   bool
	cacheTE        bool
	isReg          bool
	flipX, flipY   bool
}

type trainer struct {
	typ, jobName, name string
	raw, cfg, meta     *omap
	saveRoot           string

	steps, saveEvery, keep                int
	sampleEvery, sampleStart              int
	logEvery, perfEvery                   int
	batchSize, gradAccum                  int
	lr                                    float64
	startStepCfg                          *int
	skipFirst, forceFirst, disableSamples bool
	unloadTE, cacheTE, trainTE            bool
	trigger                               *string
	rank                                  int64
	dtype                                 string
	el                                    int64
	arch                                  wanArch
	modelPath, loraPath, pretrained       string
	quantize, quantizeTE, lowVRAM         bool
	samples                               []sampleItem
	sampleExt                             string
	datasets                              []dataset

	logger     *uiLogger
	db         *jobDB
	oldDB      bool
	isStopping bool

	stepNum, startStep, epochNum, lastSaveStep int
	bar                                        *bar
	timers                                     map[string][]float64
	consecutiveOOM                             int
	saves                                      int
	batches, epochBatches                      int

	stepDur, saveDur, loadDur, sampleDur time.Duration
	ckptBytes                            int64
	oomAt, oomTimes, failAt              int
	hangSave                             bool
}

func (p *trainer) frames(extra ...string) []string {
	return append([]string{frame("jobs/ExtensionJob.py", 22, "run", "process.run()")}, extra...)
}

func newTrainer(i int, j *job, raw, pc, meta *omap, typ string) *trainer {
	p := &trainer{typ: typ, jobName: j.name, raw: raw, cfg: pc, meta: replaceTag(meta, "\x00", "\x00").(*omap), timers: map[string][]float64{}}
	p.name = pc.str("name", j.name)
	if v, ok := pc.get("name"); ok && v == nil {
		p.name = j.name
	}
	p.perfEvery = pc.int("performance_log_every", 0)
	println(pyJSON(pc, 4))

	// BaseTrainProcess
	tf, ok := pc.get("training_folder")
	if !ok || tf == nil {
		raise(pyErr("TypeError", "expected str, bytes or os.PathLike object, not NoneType", jobFrames...))
	}
	p.saveRoot = filepath.Join(pyStr(tf), p.name)
	if err := os.MkdirAll(p.saveRoot, 0o777); err != nil {
		raise(pyErr("PermissionError", fmt.Sprintf("[Errno 13] Permission denied: '%s'", p.saveRoot), jobFrames...))
	}
	if y, err := toYAML(p.raw); err == nil {
		os.WriteFile(filepath.Join(p.saveRoot, "config.yaml"), y, 0o644)
	}

	// BaseSDTrainProcess
	net := pc.sub("network")
	p.rank = int64(net.int("linear", 4))
	if net.has("rank") {
		p.rank = int64(net.int("rank", 4))
	}
	p.pretrained = net.str("pretrained_lora_path", "")
	train := pc.sub("train")
	p.steps = train.int("steps", 1000)
	p.lr = train.num("lr", 1e-6)
	p.batchSize = max(1, train.int("batch_size", 1))
	p.gradAccum = max(1, train.int("gradient_accumulation", 1))
	if v, ok := train.get("start_step"); ok && v != nil {
		s := train.int("start_step", 0)
		p.startStepCfg = &s
	}
	p.skipFirst = train.truthy("skip_first_sample", false)
	p.forceFirst = train.truthy("force_first_sample", false)
	p.disableSamples = train.truthy("disable_sampling", false)
	p.unloadTE = train.truthy("unload_text_encoder", false)
	p.cacheTE = train.truthy("cache_text_embeddings", false)
	p.trainTE = train.truthy("train_text_encoder", false)
	model := pc.sub("model")
	p.modelPath = model.str("name_or_path", "")
	p.loraPath = model.str("lora_path", "")
	p.quantize = model.truthy("quantize", false)
	p.quantizeTE = model.truthy("quantize_te", p.quantize)
	p.lowVRAM = model.truthy("low_vram", false)
	p.arch = wan14B
	if lp := strings.ToLower(p.modelPath); strings.Contains(lp, "1.3b") || strings.Contains(lp, "1_3b") || strings.HasSuffix(model.str("arch", ""), ":1b") {
		p.arch = wan1_3B
	}
	save := pc.sub("save")
	p.saveEvery = save.int("save_every", 1000)
	p.keep = save.int("max_step_saves_to_keep", 5)
	p.dtype, p.el = dtypeOf(save.str("dtype", "float16"))

	sc := pc.sub("sample")
	p.sampleEvery = sc.int("sample_every", 100)
	p.sampleStart = sc.int("sample_start_step", 0)
	p.sampleExt = sc.str("format", "jpg")
	sw, sh := sc.int("width", 512), sc.int("height", 512)
	snf, sfps := sc.int("num_frames", 1), sc.int("fps", 16)
	if snf > 1 && p.sampleExt != "webp" {
		println("Changing sample extention to animated webp")
		p.sampleExt = "webp"
	}
	var raws []*omap
	if v, ok := sc.get("samples"); ok {
		l, _ := v.([]any)
		for _, e := range l {
			if m, ok := e.(*omap); ok {
				raws = append(raws, m)
			}
		}
	} else if v, ok := sc.get("prompts"); ok {
		l, _ := v.([]any)
		for _, e := range l {
			m := newOmap()
			m.set("prompt", e)
			raws = append(raws, m)
		}
	}
	for _, m := range raws {
		if v, ok := m.get("prompt"); !ok || v == nil {
			continue
		}
		p.samples = append(p.samples, sampleItem{
			prompt: m.str("prompt", ""), width: m.int("width", sw), height: m.int("height", sh),
			numFrames: m.int("num_frames", snf), fps: m.int("fps", sfps),
		})
	}

	lc := pc.sub("logging")
	p.logEvery = lc.int("log_every", 100)
	if lc.truthy("use_ui_logger", false) && !envOn("STANDIN_NO_LOSSLOG") {
		p.logger = newUILogger(filepath.Join(p.saveRoot, "loss_log.db"))
	}
	if v, ok := pc.get("trigger_word"); ok && v != nil {
		s := pyStr(v)
		p.trigger = &s
	}

	if v, ok := pc.get("datasets"); ok {
		l, _ := v.([]any)
		for _, e := range l {
			d, _ := e.(*omap)
			if d == nil {
				continue
			}
			res, ok := d.get("resolution")
			if !ok {
				res = int64(512)
			}
			resl, isList := res.([]any)
			if !isList {
				resl = []any{res}
			}
			path := d.str("folder_path", "")
			if v, ok := d.get("dataset_path"); ok && v != nil {
				path = pyStr(v)
			}
			for _, r := range resl {
				p.datasets = append(p.datasets, dataset{
					path: path, resolution: r, numFrames: d.int("num_frames", 1),
					autoFrameCount: d.truthy("auto_frame_count", false), fps: d.int("fps", 24),
					repeats:      max(1, d.int("num_repeats", 1)),
					cacheLatents: d.truthy("cache_latents", false) || d.truthy("cache_latents_to_disk", false),
					cacheTE:      d.truthy("cache_text_embeddings", false) || p.cacheTE,
					isReg:        d.truthy("is_reg", false), flipX: d.truthy("flip_x", false), flipY: d.truthy("flip_y", false),
				})
			}
		}
	}
	anyTE := false
	for _, d := range p.datasets {
		anyTE = anyTE || d.cacheTE
	}
	if anyTE {
		for _, d := range p.datasets {
			if !d.cacheTE {
				raise(pyErr("ValueError", "All datasets must have cache_text_embeddings set to True when caching text embeddings is enabled.", jobFrames...))
			}
		}
	}
	p.cacheTE = anyTE

	p.stepDur = envMs("STANDIN_STEP_MS", 20)
	p.saveDur = envMs("STANDIN_SAVE_MS", 40)
	p.loadDur = envMs("STANDIN_LOAD_MS", 2)
	p.sampleDur = envMs("STANDIN_SAMPLE_MS", 5)
	p.ckptBytes = int64(envInt("STANDIN_CKPT_BYTES", 1<<20))
	p.oomAt = envInt("STANDIN_OOM_AT", -1)
	p.oomTimes = envInt("STANDIN_OOM_TIMES", math.MaxInt32)
	p.failAt = envInt("STANDIN_FAIL_AT", -1)
	p.hangSave = envOn("STANDIN_HANG_SAVE")
	p.oldDB = envOn("STANDIN_OLD_DB")

	// DiffusionTrainer / UITrainer
	dbPath := pc.str("sqlite_db_path", "./aitk_db.db")
	jobID, hasID := os.LookupEnv("AITK_JOB_ID")
	jobID = strings.TrimSpace(jobID)
	isUI := true
	if _, err := os.Stat(dbPath); err != nil {
		isUI = false
		if typ == "ui_trainer" {
			raise(pyErr("Exception", "SQLite database not found at "+dbPath, jobFrames...))
		}
	} else {
		println("Using SQLite database at " + dbPath)
	}
	if !hasID {
		isUI = false
		if typ == "ui_trainer" {
			raise(pyErr("Exception", "AITK_JOB_ID not set", jobFrames...))
		}
	} else {
		printf("Job ID: \"%s\"", jobID)
	}
	if isUI && typ != "sd_trainer" {
		p.db = &jobDB{path: dbPath, id: jobID}
		p.status("running", "Starting")
	}
	return p
}

func (p *trainer) status(s, info string) {
	if p.db != nil {
		p.db.updateStatus(s, &info)
	}
}

func (p *trainer) maybeStop() {
	if p.db == nil {
		return
	}
	if p.db.flag("stop") {
		p.status("stopped", "Job stopped")
		p.isStopping = true
		raise(pyErr("Exception", "Job stopped", p.frames(frame("extensions_built_in/sd_trainer/DiffusionTrainer.py", 181, "maybe_stop", `raise Exception("Job stopped")`))...))
	}
	if p.db.flag("return_to_queue") {
		p.status("queued", "Job queued")
		p.isStopping = true
		raise(pyErr("Exception", "Job returning to queue", p.frames(frame("extensions_built_in/sd_trainer/DiffusionTrainer.py", 186, "maybe_stop", `raise Exception("Job returning to queue")`))...))
	}
}

func (p *trainer) onError(e error, kbd bool) {
	if p.db == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(keyboardInterrupt); ok {
				panic(r)
			}
			printf("[AITK] Warning: failed to update DB during error handling: %v", r)
		}
	}()
	if kbd {
		p.isStopping = true
		if p.bar != nil {
			p.bar.closed = true
		}
		p.status("stopped", "Job stopped")
	} else if !p.isStopping {
		p.status("error", e.Error())
	}
	p.db.updateKey("step", int64(p.lastSaveStep))
}

func (p *trainer) loadStatus(s string) {
	println(s)
	p.status("running", s)
	sleep(p.loadDur)
}

func (p *trainer) run() {
	// hook_before_model_load
	if p.db != nil {
		p.maybeStop()
		p.status("running", "Loading model")
	}
	// hook_after_sd_init_before_load
	if p.db != nil {
		p.maybeStop()
	}
	p.loadStatus("Loading Wan model")
	p.loadStatus("Loading transformer")
	if p.loraPath != "" {
		raise(pyErr("ValueError", "Loading LoRA is not supported for Wan2.1 models currently", p.frames(
			frame("jobs/process/BaseSDTrainProcess.py", 1806, "run", "self.sd.load_model()"),
			frame("toolkit/models/wan21/wan21.py", 402, "load_model", "transformer = self.load_wan_transformer("),
			frame("toolkit/models/wan21/wan21.py", 371, "load_wan_transformer", "raise ValueError("))...))
	}
	if p.quantize {
		p.loadStatus("Quantizing Transformer")
	}
	if p.lowVRAM {
		p.loadStatus("Moving transformer to CPU")
	}
	p.loadStatus("Loading UMT5EncoderModel")
	if p.quantizeTE {
		p.loadStatus("Quantizing UMT5EncoderModel")
	}
	if p.lowVRAM {
		println("Moving transformer back to GPU")
	}
	p.loadStatus("Loading VAE")
	p.loadStatus("Making pipe")
	p.loadStatus("Preparing Model")

	// network + resume
	latest := p.latestSavePath()
	if latest != "" {
		printf("#### IMPORTANT RESUMING FROM %s ####", latest)
		printf("Loading from %s", latest)
		meta, err := readSafetensorsMeta(latest)
		if err != nil {
			pe := err.(*pyException)
			pe.frames = p.frames(frame("jobs/process/BaseSDTrainProcess.py", 2053, "run", "extra_weights = self.load_weights(latest_save_path)"),
				frame("jobs/process/BaseSDTrainProcess.py", 893, "load_weights", "extra_weights = self.network.load_weights(path)"),
				frame("toolkit/network_mixins.py", 682, "load_weights", "weights_sd = load_file(file)"),
				"  File \"/usr/local/lib/python3.12/dist-packages/safetensors/torch.py\", line 315, in load_file\n    with safe_open(filename, framework=\"pt\", device=device) as f:")
			raise(pe)
		}
		if latest != p.pretrained {
			p.loadTrainingState(meta)
		}
	}
	if p.startStepCfg != nil {
		p.stepNum = *p.startStepCfg
		p.startStep = p.stepNum
	}
	opt := filepath.Join(p.saveRoot, "optimizer.pt")
	if _, err := os.Stat(opt); err == nil {
		println("Loading optimizer state from " + opt)
		println("Updating optimizer LR from params")
	}

	// before_dataset_load + datasets
	if p.db != nil {
		p.maybeStop()
		p.status("running", "Loading dataset")
	}
	p.loadDatasets()
	p.lastSaveStep = p.stepNum

	// hook_before_train_loop: SDTrainer then DiffusionTrainer
	if p.unloadTE || p.cacheTE {
		println("Caching embeddings and unloading text encoder")
		if p.trainTE {
			raise(pyErr("ValueError", "Cannot unload text encoder if training text encoder", p.frames()...))
		}
		println("\n***** UNLOADING TEXT ENCODER *****")
		if p.cacheTE {
			println("Embeddings cached to disk. We dont need the text encoder anymore")
		} else {
			println("This will train only with a blank prompt or trigger word, if set")
			println("If this is not what you want, remove the unload_text_encoder flag")
		}
		println("***********************************")
		println("")
	}
	if p.db != nil {
		p.maybeStop()
		p.db.updateKey("step", int64(p.stepNum))
		p.status("running", "Training")
	}

	if p.skipFirst || p.disableSamples {
		println("Skipping first sample due to config setting")
	} else if p.stepNum <= 1 || p.forceFirst {
		println("Generating baseline samples before training")
		p.sample(p.stepNum)
	}

	p.bar = newBar(p.jobName, p.steps, p.stepNum, 0.7)
	p.bar.pause()

	p.startStep = p.stepNum
	for step := p.startStep; step < p.steps; step++ {
		t0 := time.Now()
		p.stepNum = step
		p.bar.unpause()
		isSave := p.saveEvery != 0 && step%p.saveEvery == 0
		isSample := p.sampleEvery != 0 && step >= p.sampleStart && step%p.sampleEvery == 0 && !p.disableSamples
		for b := 0; b < p.gradAccum; b++ {
			if p.epochBatches > 0 && p.batches > 0 && p.batches%p.epochBatches == 0 {
				p.epochNum++
			}
			p.batches++
		}
		// hook_train_loop
		didOOM := false
		sleep(p.stepDur)
		if p.failAt >= 0 && step == p.failAt {
			raise(pyErr("RuntimeError", "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\nCompile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n",
				p.frames(frame("jobs/process/BaseSDTrainProcess.py", 2624, "run", "loss_dict = self.hook_train_loop(batch_list)"),
					frame("extensions_built_in/sd_trainer/SDTrainer.py", 2279, "hook_train_loop", "loss = self.train_single_accumulation(batch)"))...))
		}
		if p.oomAt >= 0 && step >= p.oomAt && step < p.oomAt+p.oomTimes {
			didOOM = true
		}
		if didOOM {
			p.consecutiveOOM++
			if p.consecutiveOOM > 3 {
				raise(pyErr("RuntimeError", "OOM during training step 3 times in a row, aborting training",
					p.frames(frame("jobs/process/BaseSDTrainProcess.py", 2636, "run", `raise RuntimeError("OOM during training step 3 times in a row, aborting training")`))...))
			}
			println("")
			println("################################################")
			printf("# OOM during training step, skipping batch %d/3 #", p.consecutiveOOM)
			println("################################################")
			println("")
		} else {
			p.consecutiveOOM = 0
		}
		p.timers["train_loop"] = appendTimer(p.timers["train_loop"], time.Since(t0).Seconds())

		lr, loss := 0.0, 0.0
		if !didOOM {
			lr, loss = p.lr, lossAt(step)
			p.bar.postfix = fmt.Sprintf("lr: %.1e loss: %.3e", lr, loss)
		}
		if step != p.startStep {
			if isSave {
				p.bar.pause()
				println("\nSaving at step " + strconv.Itoa(p.stepNum))
				s := p.stepNum
				p.save(&s)
				p.bar.unpause()
			}
			if isSample {
				p.bar.pause()
				p.sample(p.stepNum)
				p.bar.unpause()
			}
			if p.logEvery != 0 && step%p.logEvery == 0 && p.logger != nil {
				p.logger.log("learning_rate", lr)
				if !didOOM {
					p.logger.log("loss/loss", loss)
				}
			}
			if p.perfEvery > 0 && step%p.perfEvery == 0 {
				p.timerPrint()
			}
		}
		if p.logger != nil {
			p.logger.commit(step)
		}
		p.bar.update(step + 1 - p.bar.n)
		p.stepNum = step + 1
		// end_step_hook
		if p.db != nil {
			p.db.updateKey("step", int64(p.stepNum))
			p.maybeStop()
			if !p.oldDB {
				if p.db.flag("save_now") {
					p.db.updateKey("save_now", int64(0))
					p.bar.pause()
					println("\nSaving at step " + strconv.Itoa(p.stepNum))
					s := p.stepNum
					p.save(&s)
					p.bar.unpause()
				}
				if p.db.flag("sample_now") {
					p.db.updateKey("sample_now", int64(0))
					p.bar.pause()
					println("\nSampling at step " + strconv.Itoa(p.stepNum))
					p.sample(p.stepNum)
					p.bar.unpause()
				}
			}
		}
	}
	p.bar.close()
	p.save(nil)
	if !p.disableSamples {
		p.sample(p.stepNum)
		if p.logger != nil {
			p.logger.commit(p.stepNum)
		}
	}
	println("")
	if p.logger != nil {
		p.logger.finish()
	}
	if p.db != nil {
		p.status("completed", "Training completed")
	}
}

func appendTimer(l []float64, v float64) []float64 {
	l = append(l, v)
	if len(l) > 10 {
		l = l[1:]
	}
	return l
}

// lossAt is a plausible, deterministic flow-matching loss curve.
func lossAt(step int) float64 {
	h := uint32(step)*2654435761 ^ 0x5bd1e995
	noise := float64(h%1000)/1000 - 0.5
	return 0.08 + 0.35*math.Exp(-float64(step)/300) + 0.06*noise
}

// timerPrint is Timer.print with DiffusionTrainer's speed_string hook.
func (p *trainer) timerPrint() {
	isUI := os.Getenv("IS_AI_TOOLKIT_UI") == "1"
	if !isUI {
		printf("\nTimer '%s Timer':", p.name)
	}
	names := make([]string, 0, len(p.timers))
	for k := range p.timers {
		names = append(names, k)
	}
	sum := func(l []float64) float64 {
		s := 0.0
		for _, v := range l {
			s += v
		}
		return s
	}
	sort.Slice(names, func(i, j int) bool { return sum(p.timers[names[i]]) > sum(p.timers[names[j]]) })
	for _, k := range names {
		if !isUI {
			printf(" - %.4fs avg - %s, num = %d", sum(p.timers[k])/float64(len(p.timers[k])), k, len(p.timers[k]))
		}
	}
	if p.db != nil {
		if rate := p.bar.rate(); rate > 0 {
			if rate >= 1 {
				p.db.updateKey("speed_string", fmt.Sprintf("%.2f iter/sec", rate))
			} else {
				p.db.updateKey("speed_string", fmt.Sprintf("%.2f sec/iter", 1/rate))
			}
		} else if l := p.timers["train_loop"]; len(l) > 0 {
			spi := sum(l) / float64(len(l))
			if spi < 1 {
				p.db.updateKey("speed_string", fmt.Sprintf("%.2f iter/sec", 1/spi))
			} else {
				p.db.updateKey("speed_string", fmt.Sprintf("%.2f sec/iter", spi))
			}
		}
	}
	if !isUI {
		println("")
	}
	p.timers = map[string][]float64{}
}

// ---- resume ----

func (p *trainer) latestSavePath() string {
	var paths []string
	if _, err := os.Stat(p.saveRoot); err == nil {
		for _, pat := range []string{p.jobName + "*.safetensors", p.jobName + "*.pt", p.jobName + "*"} {
			m, _ := filepath.Glob(filepath.Join(p.saveRoot, globEscape(pat)))
			for _, x := range m {
				if !strings.HasPrefix(filepath.Base(x), ".") {
					paths = append(paths, x)
				}
			}
		}
	}
	var best string
	var bestT time.Time
	for _, x := range paths {
		for _, bad := range []string{"_LoRA", "_refiner", "_t2i", "_cn"} {
			if !strings.Contains(p.jobName, bad) && strings.Contains(x, bad) {
				goto next
			}
		}
		if fi, err := os.Stat(x); err == nil {
			if t := ctime(fi); best == "" || t.After(bestT) {
				best, bestT = x, t
			}
		}
	next:
	}
	if best == "" && p.pretrained != "" {
		if _, err := os.Stat(p.pretrained); err == nil {
			println("Using pretrained lora path from config: " + p.pretrained)
			return p.pretrained
		}
		println("Pretrained lora path from config does not exist: " + p.pretrained)
	}
	return best
}

func globEscape(pat string) string {
	// only the name part may hold glob characters; keep the trailing '*'
	star := strings.Index(pat, "*")
	r := strings.NewReplacer("[", "\\[", "?", "\\?", "*", "\\*")
	return r.Replace(pat[:star]) + pat[star:]
}

func (p *trainer) loadTrainingState(meta map[string]string) {
	ti, ok := meta["training_info"]
	if !ok || p.startStepCfg != nil {
		return
	}
	v, err := parseJSONOrdered([]byte(ti))
	m, _ := v.(*omap)
	if err != nil || m == nil || !m.has("step") {
		return
	}
	p.stepNum = m.int("step", 0)
	if m.has("epoch") {
		p.epochNum = m.int("epoch", 0)
	}
	p.startStep = p.stepNum
	printf("Found step %d in metadata, starting from there", p.stepNum)
}

// ---- save / clean_up_saves ----

func (p *trainer) save(step *int) {
	if p.db != nil {
		p.maybeStop()
		p.status("running", "Saving model")
	}
	os.MkdirAll(p.saveRoot, 0o777)
	stepStr := ""
	if step != nil {
		p.lastSaveStep = *step
		stepStr = fmt.Sprintf("_%09d", *step)
	}
	ti := newOmap()
	ti.set("step", int64(p.stepNum))
	ti.set("epoch", int64(p.epochNum))
	p.meta.set("training_info", ti)
	p.meta.set("ss_base_model_version", "wan_2.1")
	p.meta.set("ss_output_name", p.jobName)
	if p.trigger != nil {
		inner := newOmap()
		inner.set(*p.trigger, int64(1))
		tf := newOmap()
		tf.set("1_"+*p.trigger, inner)
		p.meta.set("ss_tag_frequency", tf)
	}
	// get_meta_for_safetensors
	m := replaceTag(p.meta, "[name]", p.jobName).(*omap)
	sw := newOmap()
	sw.set("name", "ai-toolkit")
	sw.set("repo", aitkRepo)
	sw.set("version", aitkVersion)
	m.set("software", sw)
	for _, k := range m.keys {
		if _, ok := m.vals[k].(string); !ok {
			m.vals[k] = pyJSON(m.vals[k], -1)
		}
	}
	m.set("format", "pt")
	ts := loraTensors(p.arch, p.rank, p.dtype, p.el, p.ckptBytes)
	seed := uint64(p.stepNum)*7919 + uint64(len(p.jobName))
	full, legacy := addnetHashes(ts, seed, m)
	m.set("sshs_model_hash", full)
	m.set("sshs_legacy_hash", legacy)
	path := filepath.Join(p.saveRoot, p.jobName+stepStr+".safetensors")
	hang := p.hangSave && p.saves == 0
	p.saves++
	if err := writeCheckpoint(path, ts, seed, m, p.saveDur, hang); err != nil {
		raise(pyErr("safetensors_rust.SafetensorError", "Error while serializing: IoError("+err.Error()+")", p.frames()...))
	}
	println("Saved checkpoint to " + path)
	opt := filepath.Join(p.saveRoot, "optimizer.pt")
	if err := writeOptimizer(opt, p.lr); err != nil {
		println(err.Error())
		println("Could not save optimizer")
	} else {
		println("Saved optimizer to " + opt)
	}
	p.cleanUpSaves()
	checkInterrupt()
	if p.db != nil {
		p.maybeStop()
		p.status("running", "Training")
	}
}

func (p *trainer) cleanUpSaves() {
	items, _ := filepath.Glob(filepath.Join(p.saveRoot, globEscape(p.jobName+"_*")))
	var sts, pts, dirs []string
	for _, it := range items {
		if strings.HasPrefix(filepath.Base(it), ".") {
			continue
		}
		fi, err := os.Stat(it)
		switch {
		case strings.HasSuffix(it, ".safetensors"):
			sts = append(sts, it)
		case strings.HasSuffix(it, ".pt"):
			pts = append(pts, it)
		case err == nil && fi.IsDir():
			dirs = append(dirs, it)
		}
	}
	byCtime := func(l []string) {
		t := map[string]time.Time{}
		for _, x := range l {
			if fi, err := os.Stat(x); err == nil {
				t[x] = ctime(fi)
			}
		}
		sort.SliceStable(l, func(i, j int) bool { return t[l[i]].Before(t[l[j]]) })
	}
	// Python's l[:-n]
	drop := func(l []string) []string {
		end := -p.keep
		if end < 0 {
			end += len(l)
			if end < 0 {
				end = 0
			}
		} else if end > len(l) {
			end = len(l)
		}
		return l[:end]
	}
	var remove []string
	for _, l := range [][]string{sts, pts, dirs} {
		byCtime(l)
		remove = append(remove, drop(l)...)
	}
	for _, it := range remove {
		println("Removing old save: " + it)
		os.RemoveAll(it)
		y := strings.TrimSuffix(it, filepath.Ext(it)) + ".yaml"
		if _, err := os.Stat(y); err == nil {
			os.Remove(y)
		}
	}
}

// ---- samples ----

func (p *trainer) sample(step int) {
	total := len(p.samples)
	if p.db != nil {
		p.maybeStop()
		p.status("running", fmt.Sprintf("Generating images - 0/%d", total))
	}
	folder := filepath.Join(p.saveRoot, "samples")
	iterBar("Generating Samples", total, func(i int) {
		it := p.samples[i]
		sleep(p.sampleDur)
		w, h := max(64, it.width-it.width%8), max(64, it.height-it.height%8)
		ext := p.sampleExt
		if it.numFrames > 1 {
			ext = "webp"
		}
		tmp := filepath.Join(folder, ".tmp")
		os.MkdirAll(tmp, 0o777)
		name := fmt.Sprintf("%d__%09d_%d.%s", time.Now().UnixMilli(), step, i, ext)
		img := sampleImage(w, h, int64(step+i))
		var err error
		if it.numFrames > 1 {
			frames := (it.numFrames-1)/4*4 + 1
			err = os.WriteFile(filepath.Join(tmp, name), animatedWebP(w, h, frames, it.fps, int64(step+i)), 0o644)
		} else {
			err = writeJPEG(filepath.Join(tmp, name), img, 95)
		}
		if err != nil {
			raise(pyErr("OSError", err.Error(), p.frames()...))
		}
		files, _ := os.ReadDir(tmp)
		thumbs := filepath.Join(folder, ".thumbs")
		for _, f := range files {
			tt := filepath.Join(tmp, f.Name()+".thumb")
			if writeJPEG(tt, thumb(img), 90) == nil {
				os.MkdirAll(thumbs, 0o777)
				os.Rename(tt, filepath.Join(thumbs, f.Name()+".jpg"))
			}
		}
		for _, f := range files {
			os.Rename(filepath.Join(tmp, f.Name()), filepath.Join(folder, f.Name()))
		}
		if p.db != nil {
			p.maybeStop()
			p.status("running", fmt.Sprintf("Generating images - %d/%d", i+1, total))
		}
	})
	println("")
	if p.db != nil {
		p.maybeStop()
		p.status("running", "Training")
	}
}

// ---- datasets ----

var (
	imageExts = []string{".jpg", ".jpeg", ".png", ".webp"}
	videoExts = []string{".mp4", ".avi", ".mov", ".webm", ".mkv", ".wmv", ".m4v", ".flv"}
)

func hasExt(name string, exts []string) bool {
	l := strings.ToLower(name)
	for _, e := range exts {
		if strings.HasSuffix(l, e) {
			return true
		}
	}
	return false
}

func (p *trainer) loadDatasets() {
	items := 0
	for _, d := range p.datasets {
		isVideo := d.numFrames > 1 || d.autoFrameCount
		exts := imageExts
		if isVideo {
			exts = append(append([]string{}, videoExts...), imageExts...)
		}
		var files []string
		if fi, err := os.Stat(d.path); err == nil && fi.IsDir() {
			filepath.WalkDir(d.path, func(path string, e os.DirEntry, err error) error {
				if err != nil {
					return nil
				}
				if e.IsDir() {
					if path != d.path && strings.HasPrefix(e.Name(), ".") {
						return filepath.SkipDir
					}
					return nil
				}
				if hasExt(e.Name(), exts) && !strings.HasPrefix(e.Name(), ".") && filepath.Base(filepath.Dir(path)) != "_controls" {
					files = append(files, path)
				}
				return nil
			})
		} else {
			raise(pyErr("FileNotFoundError", fmt.Sprintf("[Errno 2] No such file or directory: '%s'", d.path), p.frames(
				frame("jobs/process/BaseSDTrainProcess.py", 2252, "run", "self.data_loader = get_dataloader_from_datasets(self.datasets, self.train_config.batch_size, self.sd)"),
				frame("toolkit/data_loader.py", 444, "__init__", "with open(self.dataset_path, 'r') as f:"))...))
		}
		var all []string
		for r := 0; r < d.repeats; r++ {
			all = append(all, files...)
		}
		println("Dataset: " + d.path)
		if isVideo {
			println("  -  Preprocessing video dimensions")
		} else {
			println("  -  Preprocessing image dimensions")
		}
		iterBar("", len(all), func(int) { sleep(time.Millisecond) })
		sizeDB := filepath.Join(d.path, ".aitk_size.json")
		if err := os.WriteFile(sizeDB, []byte(`{"__version__": "0.1.2"}`), 0o644); err != nil {
			raise(pyErr("PermissionError", fmt.Sprintf("[Errno 13] Permission denied: '%s'", sizeDB), p.frames()...))
		}
		nv := 0
		for _, f := range all {
			if hasExt(f, videoExts) {
				nv++
			}
		}
		if isVideo {
			if len(all)-nv > 0 {
				printf("  -  Found %d videos and %d images", nv, len(all)-nv)
			} else {
				printf("  -  Found %d videos", nv)
			}
			if len(all) == 0 {
				raise(pyErr("AssertionError", "no videos found in "+d.path, p.frames(frame("toolkit/data_loader.py", 569, "__init__", `assert len(self.file_list) > 0, f"no videos found in {self.dataset_path}"`))...))
			}
		} else {
			printf("  -  Found %d images", len(all))
			if len(all) == 0 {
				raise(pyErr("AssertionError", "no images found in "+d.path, p.frames(frame("toolkit/data_loader.py", 572, "__init__", `assert len(self.file_list) > 0, f"no images found in {self.dataset_path}"`))...))
			}
		}
		mult := 1
		if d.flipX {
			println("  -  adding x axis flips")
			mult *= 2
		}
		if d.flipY {
			println("  -  adding y axis flips")
			mult *= 2
		}
		if !d.isReg {
			items += len(all) * mult
		}
		if d.cacheLatents {
			printf("Caching latents for %s", d.path)
			println(" - Saving latents to disk")
			iterBar("Caching latents to disk", len(all), func(i int) {
				lp := latentPath(all[i], d)
				if _, err := os.Stat(lp); err == nil {
					return
				}
				sleep(time.Millisecond)
				os.MkdirAll(filepath.Dir(lp), 0o777)
				lt := []tensor{{name: "latent", dtype: "F16", shape: []int64{16, 1, 8, 8}, size: 16 * 8 * 8 * 2}}
				meta := newOmap()
				meta.set("format", "pt")
				if err := writeCheckpoint(lp, lt, uint64(i), meta, 0, false); err != nil {
					raise(pyErr("PermissionError", fmt.Sprintf("[Errno 13] Permission denied: '%s'", lp), p.frames()...))
				}
			})
		}
		if d.cacheTE {
			printf("Caching text_embeddings for %s", d.path)
			println(" - Saving text embeddings to disk")
			iterBar("Caching text embeddings to disk", len(all), func(int) { sleep(time.Millisecond) })
		}
	}
	p.epochBatches = (items + p.batchSize - 1) / p.batchSize
}

// latentPath is <dir>/_latent_cache/{stem}_{urlsafe b64 md5 of the settings}.safetensors.
func latentPath(file string, d dataset) string {
	info := newOmap()
	info.set("filename", filepath.Base(file))
	info.set("latent_space_version", "wan21")
	info.set("latent_version", int64(1))
	info.set("resolution", d.resolution)
	if hasExt(file, videoExts) && d.numFrames > 1 {
		info.set("num_frames", int64(d.numFrames))
		if d.fps != 24 {
			info.set("fps", int64(d.fps))
		}
	}
	sum := md5.Sum([]byte(pyJSON(info, -1)))
	h := strings.TrimRight(base64.URLEncoding.EncodeToString(sum[:]), "=")
	stem := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	return filepath.Join(filepath.Dir(file), "_latent_cache", stem+"_"+h+".safetensors")
}
