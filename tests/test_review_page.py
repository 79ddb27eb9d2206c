"""The review page in a real browser: headless Chromium (Debian's package) driven by Playwright, `assay serve` live.

Guarantees under test: a reviewer logs in with a token, labels three queued items with the keyboard alone and
the three labels are feedback rows in the database; `u` deletes the newest one; a text holding a script tag
shows as text (no dialog opens, the DOM holds the literal characters); items the voters agreed on are not
queued. Skips when /usr/bin/chromium is absent (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from pipeline.serving.storage import Feedback, Prediction, input_hash, open_database
from tests.serve_fixtures import pack_tiny

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT_TEXT = "<script>alert(1)</script>"
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)


def _row(text: str, prediction: str, votes: dict[str, str | None], created: int) -> Prediction:
    from datetime import UTC, datetime, timedelta

    return Prediction(
        id=f"00000000-0000-0000-0000-{created:012d}",
        created_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=created),
        input_hash=input_hash(text),
        text=text,
        prediction=prediction,
        confidence=0.5,
        rule="abstain" if prediction == "ABSTAIN" else "conformal",
        reason="voters split",
        abstain_reason="the voters disagree and the LLM tier is off" if prediction == "ABSTAIN" else None,
        voter_outputs={name: {"label": label, "confidence": 0.7, "explanation": ""} for name, label in votes.items()},
        latency_ms=1.0,
        model_version="test",
        token_id="seed",
    )


def _seed() -> list[Prediction]:
    """Fresh rows (ORM objects belong to one session): one settled, four queued, the script text first."""
    return [
        _row("H5N1 confirmed in a turkey flock", "relevant", {"rules": "relevant", "classical": "relevant"}, 0),
        _row(SCRIPT_TEXT, "ABSTAIN", {"rules": "relevant", "classical": "irrelevant"}, 1),
        _row("Ducks seen near the lake", "relevant", {"rules": "relevant", "classical": "irrelevant"}, 2),
        _row("Prices of eggs went up", "ABSTAIN", {"rules": None, "classical": "irrelevant"}, 3),
        _row("A poultry show in Iowa", "irrelevant", {"rules": "irrelevant", "classical": "relevant"}, 4),
    ]


SCRIPT_ID = "00000000-0000-0000-0000-000000000001"


@dataclass(frozen=True)
class LiveServer:
    """`assay serve` in a subprocess: its URL, database URL and a review token."""

    url: str
    database_url: str
    token: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    artifacts = tmp_path / "artifacts"
    pack_tiny(artifacts)
    database_url = f"sqlite:///{tmp_path / 'serve.db'}"
    database = open_database(database_url)
    database.add_predictions(_seed())
    token = database.create_token("ada", "review").token
    database.engine.dispose()
    port = _free_port()
    env = {**os.environ, "ASSAY_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "jobs.cli", "serve", "--port", str(port), "--artifact", str(artifacts)]
    process = subprocess.Popen(
        [*command, "--database", database_url], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"assay serve did not come up on {url}:\n{output}")
            time.sleep(0.2)
        yield LiveServer(url, database_url, token)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _feedback(database_url: str) -> list[tuple[str, str, str]]:
    database = open_database(database_url)
    try:
        with database.sessions() as session:
            rows = session.scalars(select(Feedback).order_by(Feedback.id))
            return [(row.prediction_id, row.label, row.reviewer) for row in rows]
    finally:
        database.engine.dispose()


def _wait_for(predicate: Any, what: str, timeout_s: float = 10) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@needs_chromium
def test_label_three_undo_one_and_escape_html(live_server: LiveServer, tmp_path: Path) -> None:
    from playwright.sync_api import Dialog, sync_playwright

    dialogs: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        page.goto(f"{live_server.url}/review")

        # Log in with the keyboard: the token field has focus, Enter submits.
        page.keyboard.type(live_server.token)
        page.keyboard.press("Enter")
        progress = page.locator("#progress")
        progress.wait_for(state="visible")
        assert progress.inner_text() == "Item 1 of 4 (0 labelled)"  # the settled item is not queued
        assert page.locator("#who").inner_text() == "Reviewer: ada"

        # The script text is shown as text: literal characters in the DOM, no element, no dialog.
        assert page.locator("#text").inner_text() == SCRIPT_TEXT
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.locator("#text").inner_html()
        assert page.locator("#text script").count() == 0
        assert page.locator("#voters tr").count() == 2
        assert "abstain" in page.locator("#rule").inner_text()
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)

        # Label three items with keys 1, 2, 1 (labels in the task's order: irrelevant, relevant).
        expected = []
        for key, label in (("1", "irrelevant"), ("2", "relevant"), ("1", "irrelevant")):
            shown = page.locator("#item").get_attribute("data-prediction-id")
            page.keyboard.press(key)
            expected.append((shown, label, "ada"))
            page.wait_for_function(
                "n => document.getElementById('progress').textContent.includes('(' + n + ' labelled)')",
                arg=len(expected),
            )
        assert _feedback(live_server.database_url) == expected
        assert progress.inner_text().startswith("Item 4 of 4")
        assert page.locator("#recent tr").count() == 3

        # u deletes the newest label; the page returns to that item.
        page.keyboard.press("u")
        page.wait_for_function("document.getElementById('progress').textContent.includes('(2 labelled)')")
        assert _feedback(live_server.database_url) == expected[:2]
        assert page.locator("#item").get_attribute("data-prediction-id") == expected[2][0]

        # s skips without labelling.
        page.keyboard.press("s")
        assert progress.inner_text() == "Item 4 of 4 (2 labelled)"
        assert _feedback(live_server.database_url) == expected[:2]
        browser.close()
    assert dialogs == []
    assert (tmp_path / "review.png").stat().st_size > 10_000


def test_review_endpoints_need_a_review_token(live_server: LiveServer) -> None:
    assert httpx.get(f"{live_server.url}/review/queue").status_code == 401
    database = open_database(live_server.database_url)
    predictor_token = database.create_token("bot", "predict").token
    database.engine.dispose()
    headers = {"Authorization": f"Bearer {predictor_token}"}
    assert httpx.get(f"{live_server.url}/review/queue", headers=headers).status_code == 403
    review = {"Authorization": f"Bearer {live_server.token}"}
    assert httpx.post(f"{live_server.url}/review/undo", json={}, headers=review).status_code == 404
    bad = httpx.post(
        f"{live_server.url}/review/label", json={"prediction_id": SCRIPT_ID, "label": "maybe"}, headers=review
    )
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "label"
    page = httpx.get(f"{live_server.url}/review")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
