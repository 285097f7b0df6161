"""What an admin needs to see at a glance: models in memory, memory, disk, jobs, recent errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from assistant import events
from assistant.generation.catalog import meminfo


def _rss() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def snapshot(app) -> dict:
    from assistant.generation.cache import loaded_models

    data_dir = Path(app.settings.data_dir)
    disk = shutil.disk_usage(data_dir)
    memory = meminfo()
    jobs = app.jobs.list()
    rss = _rss()
    return {
        "models_loaded": [model.label for model in loaded_models()],
        "process_rss_mb": None if rss is None else round(rss / 2**20),
        "memory_available_mb": round(memory.get("MemAvailable", 0) / 2**20),
        "memory_total_mb": round(memory.get("MemTotal", 0) / 2**20),
        "disk_free_gb": round(disk.free / 2**30, 1),
        "data_dir": str(data_dir.resolve()),
        "storage_persistent": storage_is_persistent(data_dir),
        "cpu_count": os.cpu_count(),
        "jobs": {
            state: sum(j.state == state for j in jobs)
            for state in ("queued", "running", "failed", "interrupted")
        },
        "active_jobs": [
            {"id": j.id, "kind": j.kind, "state": j.state, "name": j.request.get("name", "")}
            for j in jobs
            if j.active
        ],
        "knowledge_bases": len(app.library.names()),
        "adapters": len(app.adapters.names()),
        "drafts": app.drafts.stats(),
        "recent_problems": events.recent(data_dir, ("error", "denied", "ingest", "job"), limit=200)[-200:],
    }


def storage_is_persistent(data_dir: Path) -> bool:
    """False on a Hugging Face Space without persistent storage (data is lost on restart)."""
    if not os.environ.get("SPACE_ID"):
        return True
    return str(Path(data_dir).resolve()).startswith("/data")


def problems(snap: dict, limit: int = 10) -> list[dict]:
    """The latest failures among the recent events."""
    out = []
    for e in snap["recent_problems"]:
        if (
            e["kind"] in ("error", "denied")
            or e.get("status") == "failed"
            or e.get("state") in ("failed", "interrupted")
        ):
            out.append(e)
    return out[-limit:]
