package aitk

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestJobDBProtocol(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "ctl", "control.db")
	d, err := CreateJobDB(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if err := d.InsertJob(ctx, NewJob{ID: "job-1", Name: "n", GPUIDs: "0", TotalSteps: 3000}); err != nil {
		t.Fatal(err)
	}
	// the trainer's own statements, values passed through str() as Python does
	raw, _ := sql.Open("sqlite", p)
	defer raw.Close()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`UPDATE Job SET status = ?, info = ? WHERE id = ?`, []any{"running", "Saving model", "job-1"}},
		{`UPDATE Job SET step = ? WHERE id = ?`, []any{"250", "job-1"}},
		{`UPDATE Job SET speed_string = ? WHERE id = ?`, []any{"3.20 sec/iter", "job-1"}},
	} {
		if _, err := raw.Exec(q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	st, err := d.Job(ctx, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Step != 250 || st.Info != "Saving model" || st.SecondsPerStep != 3.2 || st.TotalSteps != 3000 || len(st.Missing) != 0 {
		t.Fatalf("%+v", st)
	}
	for _, f := range []Flag{FlagStop, FlagSaveNow, FlagSampleNow, FlagReturnToQueue} {
		if err := d.SetFlag(ctx, "job-1", f, true); err != nil {
			t.Fatal(err)
		}
		var v any
		// the trainer compares the fetched value with == 1: it must be the integer 1
		if err := raw.QueryRow(`SELECT `+string(f)+` FROM Job WHERE id = ?`, "job-1").Scan(&v); err != nil || v != int64(1) {
			t.Fatalf("%s = %#v %v", f, v, err)
		}
	}
	st, _ = d.Job(ctx, "job-1")
	if !st.Stop || !st.SaveNow || !st.SampleNow || !st.ReturnToQueue || !st.Stopping() {
		t.Fatalf("%+v", st)
	}
	if err := d.SetFlag(ctx, "nope", FlagStop, true); !errors.Is(err, ErrNoJob) {
		t.Fatal(err)
	}
	if _, err := d.Job(ctx, "nope"); !errors.Is(err, ErrNoJob) {
		t.Fatal(err)
	}
}

func TestJobDBOldSchemaAndLock(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "aitk_db.db")
	raw, _ := sql.Open("sqlite", p)
	defer raw.Close()
	// an ai-toolkit UI database from before pid, save_now and sample_now
	if _, err := raw.Exec(`CREATE TABLE Job (id TEXT PRIMARY KEY, name TEXT, gpu_ids TEXT, job_config TEXT, status TEXT, stop BOOLEAN, step INTEGER, info TEXT, speed_string TEXT);
		INSERT INTO Job VALUES ('a', 'n', '0', '{}', 'running', 0, '12', 'Training', '2.00 iter/sec')`); err != nil {
		t.Fatal(err)
	}
	d, err := OpenJobDB(ctx, p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	st, err := d.Job(ctx, "a")
	if err != nil || st.Step != 12 || st.SecondsPerStep != 0.5 || len(st.Missing) == 0 {
		t.Fatalf("%+v %v", st, err)
	}
	if err := d.SetFlag(ctx, "a", FlagSaveNow, true); !errors.Is(err, ErrNoColumn) {
		t.Fatal(err)
	}
	// another program holds the write lock for a while: SetFlag waits it out
	tx, err := raw.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`UPDATE Job SET info = 'x'`); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(300 * time.Millisecond); tx.Commit() }()
	if err := d.SetFlag(ctx, "a", FlagStop, true); err != nil {
		t.Fatal(err)
	}
}

func TestLossLog(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), LossLogName)
	raw, _ := sql.Open("sqlite", p)
	defer raw.Close()
	// toolkit/logging_aitk.py's schema and rows
	if _, err := raw.Exec(`PRAGMA journal_mode=WAL;
		CREATE TABLE steps (step INTEGER PRIMARY KEY, wall_time REAL NOT NULL);
		CREATE TABLE metric_keys (key TEXT PRIMARY KEY, first_seen_step INTEGER, last_seen_step INTEGER);
		CREATE TABLE metrics (step INTEGER NOT NULL, key TEXT NOT NULL, value_real REAL, value_text TEXT, PRIMARY KEY (step, key), FOREIGN KEY (step) REFERENCES steps(step) ON DELETE CASCADE);
		INSERT INTO steps VALUES (0, 100.5), (1, 101.5), (2, 102.5);
		INSERT INTO metric_keys VALUES ('loss/loss', 0, 2), ('learning_rate', 0, 2);
		INSERT INTO metrics VALUES (0, 'loss/loss', 0.5, NULL), (1, 'loss/loss', 0.4, NULL), (2, 'loss/loss', NULL, 'nan'), (0, 'learning_rate', 1e-4, NULL);`); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLossLog(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	keys, err := l.Keys(ctx)
	if err != nil || len(keys) != 2 || keys[1].Key != "loss/loss" || keys[1].LastStep != 2 {
		t.Fatalf("%+v %v", keys, err)
	}
	pts, err := l.Series(ctx, "loss/loss", SeriesOptions{SinceStep: 0})
	if err != nil || len(pts) != 2 || pts[0].Step != 1 || pts[0].Value != 0.4 || pts[0].WallTime != 101.5 || pts[1].Text != "nan" {
		t.Fatalf("%+v %v", pts, err)
	}
	if n, err := l.LastStep(ctx); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	empty := filepath.Join(t.TempDir(), LossLogName)
	os.WriteFile(empty, nil, 0o644)
	e, _ := OpenLossLog(ctx, empty)
	if _, err := e.Keys(ctx); !errors.Is(err, ErrNoLossLog) {
		t.Fatal(err)
	}
	e.Close()
}

func TestParseLog(t *testing.T) {
	log := "Running 1 job\r\n" +
		"my_lora:   0%|          | 0/2000 [00:00<?, ?it/s]\r" +
		"my_lora:  17%|#7        | 340/2000 [11:20<55:20,  2.00s/it, lr: 1.0e-04 loss: 3.915e-01]\r" +
		"my_lora:  17%|#7        | 341/2000 [1:11:22<55:18,  1.25it/s, lr: 1.0e-04 loss: 3.900e-01]\n" +
		"\nSaving at step 341\n" +
		"Saved checkpoint to output/my_lora/my_lora_000000341.safetensors\n" +
		"Saved optimizer to output/my_lora/optimizer.pt\n" +
		"Removing old save: output/my_lora/my_lora_000000250.safetensors\n" +
		"################################################\n" +
		"# OOM during training step, skipping batch 2/3 #\n" +
		"#### IMPORTANT RESUMING FROM output/my_lora/my_lora_000000250.safetensors ####\n" +
		"Found step 250 in metadata, starting from there\n" +
		"Generating baseline samples before training\n" +
		"Error running job: CUDA out of memory. Tried to allocate 2.00 GiB\n" +
		"Job stopped\n - 1 completed job\n - 1 failure"
	evs, err := ParseLog(strings.NewReader(log))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, string(e.Kind))
	}
	want := "status progress progress progress saving checkpoint optimizer pruned oom_skip resume resume_step sampling oom stopped result result"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("got  %s\nwant %s", strings.Join(kinds, " "), want)
	}
	p := evs[2]
	if p.Text != "my_lora" || p.Step != 340 || p.Total != 2000 || p.SecondsPerStep != 2 || p.LR != 1e-4 || p.Losses["loss"] != 0.3915 || p.Elapsed != 680 || p.Remaining != 3320 {
		t.Fatalf("%+v", p)
	}
	if evs[3].Elapsed != 4282 || evs[3].SecondsPerStep != 0.8 || evs[1].Remaining != -1 {
		t.Fatalf("%+v", evs[3])
	}
	if evs[5].Step != 341 || evs[8].Count != 2 || evs[15].Failed != 1 {
		t.Fatalf("%+v %+v", evs[5], evs[8])
	}
}

func TestNames(t *testing.T) {
	c := CheckpointName{Job: "my_lora", Step: 250}
	if c.String() != "my_lora_000000250.safetensors" {
		t.Fatal(c)
	}
	for _, f := range []string{"my_lora_000000250.safetensors", "a_123456789_000000250_high_noise.safetensors"} {
		n, ok := ParseCheckpointName(f)
		if !ok || n.String() != f {
			t.Fatalf("%s: %+v", f, n)
		}
	}
	if n, ok := ParseCheckpointNameFor("my_lora", "my_lora_low_noise.safetensors"); !ok || n.Step != -1 || n.Suffix != SuffixLowNoise {
		t.Fatal(n)
	}
	if _, ok := ParseCheckpointNameFor("my_lora", "my_lora_v2.safetensors"); ok {
		t.Fatal("other file taken as a save")
	}
	s, ok := ParseSampleName("1724085406830__000000500_03.webp")
	if !ok || s.Step != 500 || s.Index != 3 || s.Ext != "webp" || s.String() != "1724085406830__000000500_03.webp" {
		t.Fatal(s)
	}
	if s, ok := ParseSampleName("1724085406830__0.jpg"); !ok || s.Step != -1 {
		t.Fatal(s)
	}
	t0 := time.Unix(1000, 0)
	es := []SaveEntry{
		{Name: "my_lora_000000500.safetensors", CTime: t0.Add(2)},
		{Name: "my_lora_000000250.safetensors", CTime: t0.Add(3)}, // copied in later: newest ctime
		{Name: "my_lora_000000250.yaml", CTime: t0.Add(3)},
		{Name: "my_lora_LoRA_000000750.safetensors", CTime: t0.Add(9)},
		{Name: "optimizer.pt", CTime: t0.Add(9)},
		{Name: ".my_lora_x", CTime: t0.Add(9)},
		{Name: "config.yaml", CTime: t0.Add(9)},
	}
	if e, ok := SelectResume("my_lora", es); !ok || e.Name != "my_lora_000000250.yaml" && e.Name != "my_lora_000000250.safetensors" {
		t.Fatal(e)
	}
	got := Pruned("my_lora", 1, 1, es)
	// clean_up_saves globs {name}_* without the _LoRA filter resume uses
	if strings.Join(got, " ") != "my_lora_000000500.safetensors my_lora_000000250.safetensors my_lora_000000250.yaml" {
		t.Fatal(got)
	}
	if len(Pruned("my_lora", 0, 1, es)) != 0 {
		t.Fatal("keep 0 prunes nothing")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "j_000000001.safetensors"), nil, 0o644)
	if p, ok, err := LatestSave(dir, "j"); !ok || err != nil || filepath.Base(p) != "j_000000001.safetensors" {
		t.Fatal(p, ok, err)
	}
}
