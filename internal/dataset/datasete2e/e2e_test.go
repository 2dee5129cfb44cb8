// Package datasete2e trains on a library dataset end to end: `dataset add`, a config
// naming it, `train run` over a real sshd with the ai-toolkit stand-in, and the job,
// its checkpoints and `dataset show` all carrying the dataset's id.
package datasete2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/daydreamlive/scopectl/internal/aitk/aitktest"
	"github.com/daydreamlive/scopectl/internal/dataset/datasetlib"
	"github.com/daydreamlive/scopectl/internal/library"
	"github.com/daydreamlive/scopectl/internal/store"
	"github.com/daydreamlive/scopectl/internal/testkit"
	"github.com/daydreamlive/scopectl/internal/train"
	. "github.com/daydreamlive/scopectl/internal/train/traintest"
)

func TestMain(m *testing.M) { testkit.Main(m) }

func TestTrainOnLibraryDataset(t *testing.T) {
	folder := aitktest.Dataset(t, 3, false)
	w := NewWorld(t, aitktest.Config{Name: "dslora", Dataset: "walk", Steps: 20, SaveEvery: 10, Keep: 2})
	// the stand-in's images are not real media: --force, as the train tests run
	var add datasetlib.AddResult
	if err := json.Unmarshal([]byte(w.Scopectl("dataset", "add", folder, "--name", "walk", "--force", "--json")), &add); err != nil {
		t.Fatal(err)
	}
	id := add.Dataset.ManifestSHA
	if add.Status != "added" || add.Dataset.Files != 6 {
		t.Fatalf("%+v", add)
	}

	// the config says folder_path: walk; train run sends the library's copy
	var res train.CollectResult
	if err := json.Unmarshal([]byte(w.Scopectl(w.RunArgs()...)), &res); err != nil {
		t.Fatal(err)
	}
	var jobs []store.TrainJob
	if err := json.Unmarshal([]byte(w.Scopectl("train", "ls", "--json")), &jobs); err != nil || len(jobs) != 1 {
		t.Fatalf("%v %+v", err, jobs)
	}
	job := jobs[0]
	if job.DatasetSHA != id {
		t.Fatalf("job records dataset %s, the library dataset is %s", job.DatasetSHA, id)
	}
	st := w.Status(job.ID)
	if st.State.Phase != train.PhaseDone || st.Job.DatasetSHA != id {
		t.Fatalf("status %s, dataset %s", st.State.Phase, st.Job.DatasetSHA)
	}
	if out := w.Scopectl("train", "status", job.ID); !strings.Contains(out, "dataset: walk@1 (id "+id[:12]+")") {
		t.Errorf("train status does not name the dataset:\n%s", out)
	}
	CheckLibrary(t, w, job.ID, 2)

	// on the machine: the dataset's files, byte for byte, in the folder named by its id
	rdir := filepath.Join(w.WS, "datasets", id[:16])
	for _, n := range []string{"clip00.jpg", "clip00.txt", "clip02.txt"} {
		a, _ := os.ReadFile(filepath.Join(folder, n))
		b, err := os.ReadFile(filepath.Join(rdir, n))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s on the machine: %v", n, err)
		}
	}

	// every collected checkpoint's lineage leads to the dataset, and dataset show lists the job
	lib, err := library.Open(w.Data)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ts := lib.Store.(store.TrainStore)
	cps, _ := ts.ListTrainCheckpoints(ctx, job.ID)
	for _, c := range cps {
		e, err := lib.Store.GetBySHA(ctx, c.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range e.Origins {
			if o.Kind != "training" {
				continue
			}
			j, err := ts.GetTrainJob(ctx, o.Job)
			if err != nil || j.DatasetSHA != id {
				t.Errorf("%s: origin job %s has dataset %s (%v)", e.Name, o.Job, j.DatasetSHA, err)
			}
		}
	}
	lib.Close()
	// lora show says which job, step and dataset made a checkpoint.
	if len(cps) > 0 {
		out := w.Scopectl("lora", "show", cps[0].SHA256[:12])
		want := fmt.Sprintf("trained:  job %s (dslora), step %d", job.ID, cps[0].Step)
		if !strings.Contains(out, want) || !strings.Contains(out, "dataset "+id[:12]+" (walk@1)") {
			t.Errorf("lora show lacks %q or the dataset:\n%s", want, out)
		}
	}
	var sh datasetlib.ShowResult
	if err := json.Unmarshal([]byte(w.Scopectl("dataset", "show", "walk", "--json")), &sh); err != nil {
		t.Fatal(err)
	}
	if len(sh.Versions) != 1 || len(sh.Versions[0].Jobs) != 1 || sh.Versions[0].Jobs[0].ID != job.ID || sh.Versions[0].Jobs[0].Checkpoints != len(cps) {
		t.Fatalf("dataset show: %+v", sh.Versions)
	}

	// the same bytes from the folder itself: the same id, and nothing sent again
	cfg, _ := os.ReadFile(w.Config)
	os.WriteFile(w.Config, bytes.Replace(cfg, []byte(`"folder_path": "walk"`), []byte(`"folder_path": `+strings.TrimSpace(jsonString(folder))), 1), 0o600)
	var run train.RunResult
	if err := json.Unmarshal([]byte(w.Scopectl(append(w.RunArgs(), "--detach")...)), &run); err != nil {
		t.Fatal(err)
	}
	if run.Job.DatasetSHA != id || run.Sync.Files != 6 || run.Sync.Sent != 0 {
		t.Fatalf("the folder: dataset %s (library %s), sync %+v", run.Job.DatasetSHA, id, run.Sync)
	}
	w.WaitFor(run.Job.ID, "the end", func(s *train.State) bool { return train.Terminal(s.Phase) })
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
