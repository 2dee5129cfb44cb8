package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestTrainJobs(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	j := TrainJob{ID: "slime-1202ab", Name: "slime", Target: "ssh://root@h:22", Workspace: "/workspace", JobDir: "/workspace/.scopectl/jobs/slime-1202ab",
		ConfigSHA: "c", DatasetSHA: "d", BaseModel: "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", Steps: 100, CostPerHr: 1.5, StartedAt: now, Phase: "training", Step: 10}
	if err := s.PutTrainJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTrainJob(ctx, TrainJob{ID: "slime-1202cd", Target: "t", JobDir: "d", StartedAt: now.Add(time.Minute), Kubeconfig: "/home/u/lab.yaml"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetTrainJob(ctx, "slime-1202cd"); err != nil || got.Kubeconfig != "/home/u/lab.yaml" {
		t.Fatalf("kubeconfig: %+v %v", got, err)
	}
	got, err := s.GetTrainJob(ctx, "slime-1202ab")
	if err != nil || got.BaseModel != j.BaseModel || got.Step != 10 || !got.StartedAt.Equal(now) || got.EndedAt != nil {
		t.Fatalf("%+v %v", got, err)
	}
	if got, err := s.GetTrainJob(ctx, "slime-1202a"); err != nil || got.ID != j.ID {
		t.Errorf("prefix: %+v %v", got, err)
	}
	if _, err := s.GetTrainJob(ctx, "slime-"); !errors.Is(err, ErrAmbiguous) {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if _, err := s.GetTrainJob(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	end := now.Add(time.Hour)
	j.EndedAt, j.Phase = &end, "done"
	s.PutTrainJob(ctx, j)
	jobs, _ := s.ListTrainJobs(ctx)
	if len(jobs) != 2 || jobs[0].ID != "slime-1202cd" || jobs[1].EndedAt == nil || !jobs[1].EndedAt.Equal(end) {
		t.Errorf("list: %+v", jobs)
	}
	loss := 0.25
	for _, c := range []TrainCheckpoint{{JobID: j.ID, File: "slime_000000020.safetensors", Step: 20, SHA256: "AA", Size: 2},
		{JobID: j.ID, File: "slime_000000010.safetensors", Step: 10, SHA256: "bb", Size: 1, Loss: &loss}} {
		if err := s.PutTrainCheckpoint(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	cps, err := s.ListTrainCheckpoints(ctx, j.ID)
	if err != nil || len(cps) != 2 || cps[0].Step != 10 || cps[0].Loss == nil || *cps[0].Loss != 0.25 || cps[1].Loss != nil || cps[1].SHA256 != "aa" {
		t.Errorf("checkpoints: %+v %v", cps, err)
	}
}

func TestSetTrainJobState(t *testing.T) {
	s, err := OpenSQLite(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	s.PutTrainJob(ctx, TrainJob{ID: "j", Target: "t", JobDir: "d", Binary: "/b"})
	end := time.Now().UTC().Truncate(time.Second)
	if err := s.SetTrainJobState(ctx, "j", "done", 40, &end); err != nil {
		t.Fatal(err)
	}
	j, _ := s.GetTrainJob(ctx, "j")
	if j.Binary != "/b" || j.Phase != "done" || j.Step != 40 || j.EndedAt == nil || !j.EndedAt.Equal(end) || j.UpdatedAt == nil {
		t.Errorf("%+v", j)
	}
	if err := s.SetTrainJobState(ctx, "nope", "done", 1, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
}
