package store

// migrations are applied in order; migrations[i] takes the schema from
// user_version i to i+1. Never edit a released step: append a new one.
var migrations = []string{
	// 1: initial schema.
	`
CREATE TABLE loras (
	sha256      TEXT PRIMARY KEY NOT NULL,
	name        TEXT NOT NULL UNIQUE,
	size        INTEGER NOT NULL,
	path        TEXT NOT NULL,
	managed     INTEGER NOT NULL,
	family      TEXT NOT NULL,
	base        TEXT NOT NULL,
	rank        INTEGER NOT NULL,
	info        TEXT,
	added_at    TEXT NOT NULL,
	verified_at TEXT
);
CREATE INDEX loras_base_family ON loras(base, family);

CREATE TABLE origins (
	lora_sha   TEXT NOT NULL REFERENCES loras(sha256) ON DELETE CASCADE ON UPDATE CASCADE,
	ordinal    INTEGER NOT NULL,
	kind       TEXT NOT NULL,
	path       TEXT NOT NULL DEFAULT '',
	url        TEXT NOT NULL DEFAULT '',
	repo       TEXT NOT NULL DEFAULT '',
	revision   TEXT NOT NULL DEFAULT '',
	commit_id  TEXT NOT NULL DEFAULT '',
	file       TEXT NOT NULL DEFAULT '',
	model_id   TEXT NOT NULL DEFAULT '',
	version_id TEXT NOT NULL DEFAULT '',
	job        TEXT NOT NULL DEFAULT '',
	step       INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (lora_sha, ordinal)
);
CREATE INDEX origins_repo_file ON origins(repo, file);
CREATE INDEX origins_civitai ON origins(model_id, version_id);

CREATE TABLE installs (
	dir           TEXT NOT NULL,
	file          TEXT NOT NULL,
	name          TEXT NOT NULL,
	source_sha256 TEXT NOT NULL,
	sha256        TEXT NOT NULL,
	size          INTEGER NOT NULL,
	form          TEXT NOT NULL,
	pipeline      TEXT NOT NULL DEFAULT '',
	installed_at  TEXT NOT NULL,
	PRIMARY KEY (dir, file)
);
CREATE INDEX installs_source ON installs(source_sha256);
`,
	// 2: pods scopectl created, keyed by the request id written before Create is called,
	// so a run that crashed mid-create finds its pod again.
	`
CREATE TABLE pods (
	request_id       TEXT PRIMARY KEY NOT NULL,
	provider         TEXT NOT NULL,
	id               TEXT,
	name             TEXT NOT NULL,
	gpu_type         TEXT NOT NULL DEFAULT '',
	cost_per_hr      REAL NOT NULL DEFAULT 0,
	created_at       TEXT NOT NULL,
	idle_stop_s      INTEGER NOT NULL DEFAULT 0,
	max_hours        REAL NOT NULL DEFAULT 0,
	last_seen_status TEXT NOT NULL DEFAULT 'CREATING',
	last_seen_at     TEXT,
	terminated_at    TEXT
);
CREATE UNIQUE INDEX pods_provider_id ON pods(provider, id) WHERE id IS NOT NULL;
`,
	// 3: what a hub says about a LoRA it served (CivitAI's baseModel and trained words).
	`
ALTER TABLE origins ADD COLUMN base_model TEXT NOT NULL DEFAULT '';
ALTER TABLE origins ADD COLUMN trigger_words TEXT NOT NULL DEFAULT '';
`,
	// 4: machines scopectl reaches but did not rent (provider "ssh"): where they are, how
	// many GPUs they have, and the container that runs Scope there.
	`
ALTER TABLE pods ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE pods ADD COLUMN gpu_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE pods ADD COLUMN container TEXT NOT NULL DEFAULT '';
`,
	// 5: samples (training sample images and videos) pulled into the library, each with
	// where it came from and, when known, the LoRA it shows.
	`
CREATE TABLE samples (
	sha256      TEXT PRIMARY KEY NOT NULL,
	name        TEXT NOT NULL,
	size        INTEGER NOT NULL,
	path        TEXT NOT NULL,
	lora_sha256 TEXT NOT NULL DEFAULT '',
	origin      TEXT NOT NULL DEFAULT '',
	added_at    TEXT NOT NULL
);
CREATE INDEX samples_lora ON samples(lora_sha256);
`,
	// 6: the sha256 of files scopectl has read in full, with the size, mtime and inode they
	// had then, so that an unchanged file (lora scan, a library blob) is not read again.
	`
CREATE TABLE file_hashes (
	path       TEXT PRIMARY KEY NOT NULL,
	size       INTEGER NOT NULL,
	mtime_ns   INTEGER NOT NULL,
	inode      INTEGER NOT NULL,
	sha256     TEXT NOT NULL,
	checked_at TEXT NOT NULL
);
`,
	// training jobs scopectl started (train run) and the checkpoints it collected from
	// them, with the lineage a LoRA's origin does not hold (config and dataset hashes, loss).
	`
CREATE TABLE train_jobs (
	id          TEXT PRIMARY KEY NOT NULL,
	name        TEXT NOT NULL,
	target      TEXT NOT NULL,
	pod_id      TEXT NOT NULL DEFAULT '',
	workspace   TEXT NOT NULL,
	job_dir     TEXT NOT NULL,
	binary      TEXT NOT NULL,
	save_dir    TEXT NOT NULL DEFAULT '',
	config_path TEXT NOT NULL DEFAULT '',
	config_sha  TEXT NOT NULL DEFAULT '',
	dataset_sha TEXT NOT NULL DEFAULT '',
	base_model  TEXT NOT NULL DEFAULT '',
	steps       INTEGER NOT NULL DEFAULT 0,
	cost_per_hr REAL NOT NULL DEFAULT 0,
	started_at  TEXT NOT NULL,
	phase       TEXT NOT NULL DEFAULT '',
	step        INTEGER NOT NULL DEFAULT 0,
	updated_at  TEXT,
	ended_at    TEXT,
	preview     TEXT NOT NULL DEFAULT '',
	keep        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE train_checkpoints (
	job_id       TEXT NOT NULL,
	file         TEXT NOT NULL,
	step         INTEGER NOT NULL,
	sha256       TEXT NOT NULL,
	size         INTEGER NOT NULL,
	loss         REAL,
	collected_at TEXT NOT NULL,
	PRIMARY KEY (job_id, file)
);
`,
	// The cost ledger: every run of every pod scopectl sees (a run: one start to its
	// stop, split where the price per hour changed), with where its end came from.
	// IF NOT EXISTS: steps appended by parallel work may land in either order.
	`
CREATE TABLE IF NOT EXISTS pod_runs (
	provider     TEXT NOT NULL,
	pod_id       TEXT NOT NULL,
	started_at   TEXT NOT NULL,
	request_id   TEXT NOT NULL DEFAULT '',
	name         TEXT NOT NULL DEFAULT '',
	job          TEXT NOT NULL DEFAULT '',
	gpu_type     TEXT NOT NULL DEFAULT '',
	cost_per_hr  REAL NOT NULL,
	volume_gb    INTEGER NOT NULL DEFAULT 0,
	network_volume_id TEXT NOT NULL DEFAULT '',
	seen_at      TEXT NOT NULL,
	ended_at     TEXT,
	end_source   TEXT NOT NULL DEFAULT '',
	end_reason   TEXT NOT NULL DEFAULT '',
	idle_seconds REAL NOT NULL DEFAULT 0,
	PRIMARY KEY (provider, pod_id, started_at)
);
CREATE INDEX IF NOT EXISTS pod_runs_open ON pod_runs(provider, ended_at);
`,
	// Training datasets kept in the library (dataset add): each version of a name is a
	// manifest (its canonical bytes; sha256 = the dataset id) whose files are library
	// blobs, listed in dataset_blobs so that a blob another dataset or a LoRA still uses
	// is never removed. IF NOT EXISTS: steps appended by parallel work may land in either order.
	`
CREATE TABLE IF NOT EXISTS datasets (
	name         TEXT NOT NULL,
	version      INTEGER NOT NULL,
	manifest_sha TEXT NOT NULL,
	files        INTEGER NOT NULL,
	items        INTEGER NOT NULL,
	bytes        INTEGER NOT NULL,
	created_at   TEXT NOT NULL,
	source_dir   TEXT NOT NULL DEFAULT '',
	manifest     BLOB NOT NULL,
	check_json   TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS datasets_manifest ON datasets(manifest_sha);
CREATE TABLE IF NOT EXISTS dataset_blobs (
	manifest_sha TEXT NOT NULL,
	sha256       TEXT NOT NULL,
	PRIMARY KEY (manifest_sha, sha256)
);
CREATE INDEX IF NOT EXISTS dataset_blobs_sha ON dataset_blobs(sha256);
`,
	// The kubeconfig a training job on Kubernetes was run with (its path, never its
	// content), so that later commands reach the cluster without the same KUBECONFIG.
	`
ALTER TABLE train_jobs ADD COLUMN kubeconfig TEXT NOT NULL DEFAULT '';
`,
}
