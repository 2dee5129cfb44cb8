#!/usr/bin/env python3
"""Checks that huggingface_hub, fully offline, finds the files scopectl put in a Hugging Face
cache, and that they hold the bytes scopectl recorded.

    python3 hf_cache_check.py CACHE_DIR REPO_ID [MANIFEST.json] [--revision main] [--repo-type model]

MANIFEST is what scopectl recorded: the JSON printed by
`go run ./internal/hub/hf/hftest/mkcache -dir CACHE_DIR` (an object with "files", and optionally
"revision", "commit", "no_exist", "complete"), or the list of files printed by
`scopectl hub pull … --json` (objects with path, size, sha256, etag, commit, cache_path).
Read from stdin when omitted.

With HF_HUB_OFFLINE=1 (set here before huggingface_hub is imported) it uses, for every recorded
file: hf_hub_download(local_files_only=True), try_to_load_from_cache; for the repo:
snapshot_download(local_files_only=True) with allow_patterns = the recorded paths (and without
patterns when the manifest says the pull was complete), scan_cache_dir (no warnings, the revision
and its refs), and try_to_load_from_cache for every "no_exist" path (must be _CACHED_NO_EXIST).
Each file's sha256 is compared with the recorded sha256 (LFS files) and its git blob sha1 with
the recorded etag (files stored in git), and sizes with the recorded sizes.
Exit status 0 when everything matches, 1 otherwise.
"""

import argparse
import hashlib
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import huggingface_hub  # noqa: E402
from huggingface_hub import (  # noqa: E402
    hf_hub_download,
    scan_cache_dir,
    snapshot_download,
    try_to_load_from_cache,
)

try:
    from huggingface_hub import _CACHED_NO_EXIST  # noqa: E402
except ImportError:  # older layouts
    from huggingface_hub.file_download import _CACHED_NO_EXIST  # noqa: E402

failures = []


def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def digests(path):
    size = os.path.getsize(path)
    s256 = hashlib.sha256()
    s1 = hashlib.sha1()
    s1.update(b"blob %d\x00" % size)
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            s256.update(b)
            s1.update(b)
    return size, s256.hexdigest(), s1.hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache_dir")
    ap.add_argument("repo_id")
    ap.add_argument("manifest", nargs="?")
    ap.add_argument("--revision", default=None, help="default: the manifest's revision, else main")
    ap.add_argument("--repo-type", default=None, help="default: the manifest's repo_type, else model")
    a = ap.parse_args()

    raw = open(a.manifest).read() if a.manifest else sys.stdin.read()
    man = json.loads(raw)
    if isinstance(man, list):
        man = {"files": man}
    files = man.get("files") or []
    revision = a.revision or man.get("revision") or "main"
    repo_type = a.repo_type or man.get("repo_type") or "model"
    cache = os.path.abspath(a.cache_dir)
    print(f"huggingface_hub {huggingface_hub.__version__}, HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']}")
    print(f"cache {cache}, repo {repo_type}:{a.repo_id}@{revision}, {len(files)} recorded files")
    check(len(files) > 0, "the manifest records files")

    commits = {f.get("commit") for f in files if f.get("commit")}
    commit = man.get("commit") or (commits.pop() if len(commits) == 1 else None)

    for f in files:
        name = f["path"]
        try:
            p = hf_hub_download(a.repo_id, name, repo_type=repo_type, revision=revision,
                                cache_dir=cache, local_files_only=True)
        except Exception as e:  # noqa: BLE001
            check(False, f"hf_hub_download {name}: {type(e).__name__}: {e}")
            continue
        if f.get("cache_path"):
            check(os.path.abspath(p) == os.path.abspath(f["cache_path"]),
                  f"hf_hub_download {name} -> {p} is scopectl's snapshot path")
        check(os.path.islink(p) and not os.path.isabs(os.readlink(p)),
              f"{name} is a relative symlink ({os.readlink(p) if os.path.islink(p) else 'not a link'})")
        real = os.path.realpath(p)
        check(real.startswith(os.path.realpath(cache) + os.sep) and os.sep + "blobs" + os.sep in real,
              f"{name} resolves into the cache's blobs/")
        size, s256, s1 = digests(p)
        check(size == f.get("size"), f"{name}: size {size} == recorded {f.get('size')}")
        if f.get("sha256"):
            check(s256 == f["sha256"], f"{name}: sha256 {s256} == recorded {f['sha256']}")
            check(os.path.basename(real) == f["sha256"], f"{name}: blob named by its sha256")
        else:
            check(s1 == f.get("etag"), f"{name}: git blob sha1 {s1} == recorded etag {f.get('etag')}")
        if f.get("etag"):
            check(os.path.basename(real) == f["etag"], f"{name}: blob named by its etag")
        t = try_to_load_from_cache(a.repo_id, name, cache_dir=cache, revision=revision, repo_type=repo_type)
        check(isinstance(t, str) and os.path.realpath(t) == real, f"try_to_load_from_cache {name}")

    for name in man.get("no_exist") or []:
        t = try_to_load_from_cache(a.repo_id, name, cache_dir=cache, revision=revision, repo_type=repo_type)
        check(t is _CACHED_NO_EXIST, f"try_to_load_from_cache {name} is _CACHED_NO_EXIST (got {t!r})")

    paths = [f["path"] for f in files]
    try:
        snap = snapshot_download(a.repo_id, repo_type=repo_type, revision=revision, cache_dir=cache,
                                 local_files_only=True, allow_patterns=paths)
        if commit:
            check(os.path.basename(snap) == commit, f"snapshot_download -> {snap} is snapshots/{commit}")
        for name in paths:
            check(os.path.isfile(os.path.join(snap, name)), f"snapshot_download folder has {name}")
    except Exception as e:  # noqa: BLE001
        check(False, f"snapshot_download(allow_patterns=recorded): {type(e).__name__}: {e}")
    if man.get("complete") is False:
        err_cls = getattr(__import__("huggingface_hub.errors", fromlist=["x"]), "IncompleteSnapshotError", None)
        if err_cls is not None:  # huggingface_hub reads trees/<commit>.json to tell a partial snapshot
            try:
                snapshot_download(a.repo_id, repo_type=repo_type, revision=revision, cache_dir=cache,
                                  local_files_only=True)
                check(False, "snapshot_download (whole repo) of a partial pull raises IncompleteSnapshotError")
            except err_cls:
                check(True, "snapshot_download (whole repo) of a partial pull raises IncompleteSnapshotError")
            except Exception as e:  # noqa: BLE001
                check(False, f"snapshot_download (whole repo) of a partial pull: {type(e).__name__}: {e}")
    if man.get("complete"):
        try:
            snap = snapshot_download(a.repo_id, repo_type=repo_type, revision=revision, cache_dir=cache,
                                     local_files_only=True)
            check(True, f"snapshot_download (whole repo) -> {snap}")
        except Exception as e:  # noqa: BLE001
            check(False, f"snapshot_download (whole repo): {type(e).__name__}: {e}")

    info = scan_cache_dir(cache)
    for w in info.warnings:
        check(False, f"scan_cache_dir warning: {w}")
    repos = [r for r in info.repos if r.repo_id == a.repo_id and r.repo_type == repo_type]
    check(len(repos) == 1, f"scan_cache_dir finds {repo_type} {a.repo_id}")
    if repos:
        r = repos[0]
        revs = {rv.commit_hash: rv for rv in r.revisions}
        if commit:
            check(commit in revs, f"scan_cache_dir lists revision {commit}")
            if commit in revs and revision != commit:
                check(revision in revs[commit].refs, f"refs of {commit} include {revision} ({sorted(revs[commit].refs)})")
            if commit in revs:
                names = {os.path.relpath(str(cf.file_path), str(revs[commit].snapshot_path)) for cf in revs[commit].files}
                check(names == set(p.replace("/", os.sep) for p in paths),
                      f"scan_cache_dir files of {commit} == recorded ({len(names)})")
    check(len(list(getattr(info, "incomplete_files", []) or [])) == 0, "no incomplete downloads left")

    print(f"{'OK' if not failures else 'FAILED'}: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
