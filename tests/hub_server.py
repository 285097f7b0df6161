"""A Hugging Face Hub stand-in on loopback, speaking the protocol ``huggingface_hub`` uses to
download a model: ``GET /api/models/<id>`` (files with sizes) and ``HEAD``/``GET
/<id>/resolve/<rev>/<file>``. Files are sent in 64 KB pieces, ``delay_s`` apart, so a test can
watch a download's progress and cancel it half-way."""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import time

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def serve_hub(files: dict[str, bytes], repo_id: str, delay_s: float = 0.0):
    """Start the server; returns (endpoint URL, server)."""

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _file(self) -> bytes | None:
            match = re.fullmatch(rf"/{re.escape(repo_id)}/resolve/[^/]+/(.+)", self.path.split("?")[0])
            return files.get(match.group(1)) if match else None

        def _head(self, data: bytes) -> None:
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def do_HEAD(self) -> None:
            data = self._file()
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            self._head(data)

        def do_GET(self) -> None:
            if self.path.split("?")[0].rstrip("/").startswith(f"/api/models/{repo_id}"):
                siblings = [{"rfilename": name, "size": len(data)} for name, data in files.items()]
                body = json.dumps({"id": repo_id, "modelId": repo_id, "sha": COMMIT, "siblings": siblings})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())
                return
            data = self._file()
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound")
                self.end_headers()
                return
            self._head(data)
            try:
                for start in range(0, len(data), 1 << 16):
                    self.wfile.write(data[start : start + (1 << 16)])
                    time.sleep(delay_s)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client cancelled

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server
