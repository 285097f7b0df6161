"""Take the README screenshots of a running app: python scripts/screenshot.py URL OUT_DIR.

Needs Playwright (pip install playwright) and a Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def main(url: str, out: Path, question: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        page.wait_for_timeout(3000)
        page.get_by_role("tab", name="Knowledge").click()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "knowledge.png"))
        page.get_by_role("tab", name="Chat").click()
        page.get_by_placeholder("Ask a question about your documents…").fill(question)
        page.get_by_role("button", name="Send").click()
        page.wait_for_timeout(15000)
        page.screenshot(path=str(out / "chat.png"))
        browser.close()


if __name__ == "__main__":
    main(
        sys.argv[1],
        Path(sys.argv[2]),
        sys.argv[3] if len(sys.argv) > 3 else "Is there a warranty on the TrailMaster X4 Tent?",
    )
