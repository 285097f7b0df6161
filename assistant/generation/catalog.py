"""The models Tsumugi can use, what each needs in memory, and fetching one from the hub.

The catalogue lists the embedded chat model and embedder, model folders under the models
directory (and merged adapter exports), and the models in the local Hugging Face cache. Each
entry has its size on disk, its parameter count (from the safetensors or GGUF headers), the
precisions it loads in, and an estimate of the memory each precision needs:

    parameters × bytes per parameter × 1.2 + 300 MB

(the 20 % and 300 MB cover activations, a RAG prompt's KV cache and the runtime). A model is
refused with one sentence, before anything loads, when the estimate exceeds the memory free.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from assistant.generation.backend import ModelError
from assistant.generation.config import EMBEDDED_MODEL, embedded_gguf
from knowledge.embed import DEFAULT_EMBED_MODEL, embedded_model_path
from knowledge.errors import Cancelled, ConfigError
from knowledge.progress import Clock, Progress

BYTES_PER_PARAMETER = {"fp32": 4.0, "bf16": 2.0, "8bit": 1.0, "4bit": 0.55}
"""Weights' bytes per parameter (4-bit NF4 keeps its scales and the unquantized layers)."""
OVERHEAD = 1.2
FIXED_MB = 300
CHAT_PRECISIONS = ("fp32", "bf16", "8bit", "4bit")
EMBED_PRECISIONS = ("fp32",)


@dataclass
class ModelEntry:
    name: str
    """What to choose it by: the embedded model's name, a folder, or a hub id."""
    kind: str
    """chat or embedding."""
    source: str
    """embedded, folder or hub cache."""
    size_mb: float
    parameters: int
    precisions: tuple[str, ...]
    memory_mb: dict[str, int] = field(default_factory=dict)
    """The estimated memory each precision needs."""

    def to_json(self) -> dict:
        return asdict(self)


def memory_needed_mb(parameters: int, precision: str) -> int:
    return math.ceil(parameters * BYTES_PER_PARAMETER[precision] * OVERHEAD / 2**20 + FIXED_MB)


def _safetensors_parameters(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as fh:
            length = int.from_bytes(fh.read(8), "little")
            if not 2 <= length <= min(path.stat().st_size - 8, 100 * 2**20):
                raise ValueError(f"{path.name} is not a safetensors file")
            header = json.loads(fh.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                total += math.prod(tensor["shape"])
    return total


def _gguf_parameters(path: Path) -> int:
    from gguf import GGUFReader

    return sum(int(t.n_elements) for t in GGUFReader(str(path)).tensors)


def _size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)


def model_kind(folder: Path) -> str | None:
    """chat, embedding, or None for a folder that holds neither (or no model at all)."""
    if (folder / "modules.json").exists() or (folder / "config_sentence_transformers.json").exists():
        return "embedding"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    architectures = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in architectures):
        return "chat"
    return None


def _entry(name: str, kind: str, source: str, size_mb: float, parameters: int) -> ModelEntry:
    precisions = CHAT_PRECISIONS if kind == "chat" else EMBED_PRECISIONS
    memory = {p: memory_needed_mb(parameters, p) for p in precisions}
    return ModelEntry(name, kind, source, size_mb, parameters, precisions, memory)


def _bin_parameters(folder: Path) -> int:
    """Parameters of PyTorch ``.bin`` weights, from their size and the config's dtype."""
    try:
        dtype = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("torch_dtype")
    except (OSError, ValueError):
        dtype = None
    size = sum(p.stat().st_size for p in folder.glob("*.bin"))
    return int(size / (2 if dtype in ("bfloat16", "float16") else 4))


def folder_entry(folder: Path, source: str = "folder", name: str | None = None) -> ModelEntry | None:
    """The folder's entry; None when it holds no model or no readable weights (a download
    that did not finish, a git-LFS pointer): such a folder cannot be loaded, so it is not listed."""
    kind = model_kind(folder)
    if kind is None:
        return None
    weights = folder / "0_Transformer" if (folder / "0_Transformer").is_dir() else folder
    try:
        parameters = _safetensors_parameters(weights) or _bin_parameters(weights)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not parameters:
        return None
    return _entry(name or str(folder), kind, source, _size_mb(folder), parameters)


def embedded_entries() -> list[ModelEntry]:
    gguf = embedded_gguf()
    chat = _entry(
        EMBEDDED_MODEL, "chat", "embedded", round(gguf.stat().st_size / 2**20, 1), _gguf_parameters(gguf)
    )
    embed = folder_entry(embedded_model_path(), "embedded", DEFAULT_EMBED_MODEL)
    return [chat, *([embed] if embed else [])]


def cached_entries() -> list[ModelEntry]:
    """Models in the local Hugging Face cache (their newest snapshot)."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(constants.HF_HUB_CACHE)  # the cache downloads go to
    except CacheNotFound:
        return []
    entries = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        newest = max(repo.revisions, key=lambda r: r.last_modified)
        entry = folder_entry(Path(newest.snapshot_path), "hub cache", repo.repo_id)
        if entry is not None:
            entries.append(entry)
    return entries


def list_models(folders: list[Path]) -> list[ModelEntry]:
    """Every model Tsumugi can use: embedded, the model folders directly under ``folders``,
    and the local Hugging Face cache."""
    entries = embedded_entries()
    for root in folders:
        for folder in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
            entry = folder_entry(folder) if folder.is_dir() else None
            if entry is not None:
                entries.append(entry)
    return entries + cached_entries()


def describe(name: str, folders: list[Path]) -> ModelEntry | None:
    """The catalogue's entry for ``name`` (a name, folder or hub id), or None when it is not there."""
    if Path(name).is_dir():
        return folder_entry(Path(name))
    for entry in list_models(folders):
        if entry.name == name:
            return entry
    return None


def free_memory_mb(device: str, override_mb: int | None = None) -> int:
    """Memory free for a model on ``device``: VRAM on CUDA, available RAM otherwise
    (``override_mb`` when given: TSUMUGI_FREE_MEMORY_MB)."""
    if override_mb is not None:
        return override_mb
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0] / 2**20)
    return int(meminfo().get("MemAvailable", 0) / 2**20)


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (empty where there is none)."""
    info = {}
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return info


def check_fits(entry: ModelEntry, precision: str, device: str, override_mb: int | None = None) -> None:
    """Refuse, in one sentence, a model whose estimated memory exceeds what is free."""
    if precision not in entry.memory_mb:
        raise ConfigError(
            f"{entry.name} loads in {', '.join(entry.precisions)}, not {precision}; choose one of those."
        )
    needed, free = entry.memory_mb[precision], free_memory_mb(device, override_mb)
    if needed > free:
        where = "GPU memory" if device == "cuda" else "memory"
        raise ModelError(
            f"{entry.name} needs about {needed / 1024:.1f} GB in {precision} and only {free / 1024:.1f} GB of "
            f"{where} is free; choose a smaller model or a lower precision (4bit needs "
            f"{entry.memory_mb.get('4bit', needed) / 1024:.1f} GB)."
        )


def pull(repo_id: str, allow_downloads: bool, cancel: threading.Event) -> Generator[Progress, None, str]:
    """Download a hub model into the local Hugging Face cache, file by file, with progress in
    MB; ``cancel`` stops it within the next chunk. Returns the snapshot folder."""
    if not allow_downloads:
        raise ConfigError(
            "Downloads are off: set TSUMUGI_ALLOW_DOWNLOADS=1 to fetch models from the Hugging Face Hub."
        )
    from huggingface_hub import HfApi, constants, hf_hub_download
    from tqdm.auto import tqdm

    try:
        info = HfApi().model_info(repo_id, files_metadata=True)
    except Exception as exc:  # not found, no network, refused: all end the pull here
        raise ModelError(
            f"Could not fetch {repo_id!r} from {constants.ENDPOINT} ({exc.__class__.__name__}); "
            "check the id and the network."
        ) from exc
    files = [(s.rfilename, s.size or 0) for s in info.siblings or []]
    # The weights last: a snapshot without them is not listed, so a cancelled pull is not a model.
    files.sort(key=lambda f: f[0].endswith((".safetensors", ".bin")))
    total = round(sum(size for _, size in files) / 2**20, 1) or 0.1
    events: queue.Queue = queue.Queue()
    done_bytes = [0]
    stopped = f"Download of {repo_id} cancelled; the files fetched so far stay in the cache."

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **{**kwargs, "disable": True})

        def update(self, n=1):
            if cancel.is_set():
                raise Cancelled(stopped)
            done_bytes[0] += n or 0
            events.put(None)
            return super().update(n)

    result: dict = {}

    def run() -> None:
        try:
            for filename, _ in files:
                if cancel.is_set():
                    raise Cancelled(stopped)
                path = Path(hf_hub_download(repo_id, filename, revision=info.sha, tqdm_class=Reporting))
                result["path"] = path.parents[len(Path(filename).parts) - 1]
        except BaseException as exc:  # handed to the generator, which raises it
            result["error"] = exc
        events.put(StopIteration)

    clock = Clock()
    yield clock.event("downloading", 0, total, "MB", repo_id)
    threading.Thread(target=run, name=f"pull-{repo_id}", daemon=True).start()
    while True:
        item = events.get()
        if item is StopIteration:
            break
        yield clock.event("downloading", min(round(done_bytes[0] / 2**20, 1), total), total, "MB", repo_id)
    if "error" in result:
        error = result["error"]
        if isinstance(error, Cancelled):
            raise error
        raise ModelError(
            f"The download of {repo_id!r} stopped ({error.__class__.__name__}); run it again to resume."
        ) from error
    yield clock.event("downloading", total, total, "MB", repo_id)
    return str(result.get("path", ""))
