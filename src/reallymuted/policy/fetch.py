"""Fetch the current text of each document of the policy corpus (rule ``policy_fetch``).

Off by default (``policy.fetch`` in config.yaml) and never needed by the rest of the study: the
corpus is what the policy stage reads. With it on, a machine with internet keeps, per document,
what the vendor serves today: the bytes as served (``.raw``), their text (``.txt``, what
``reallymuted policy review`` reads) and a record (``.json``) of the URL asked and answered,
when (UTC), the SHA-256 of the bytes and of the text, the content type, and how the text was
made. The texts served today are not the versions the corpus quotes; the record's date says
which one was read. Not run here: this machine has no internet (docs/policy.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import subprocess
import tempfile
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from reallymuted.io import atomic_path, write_json, write_text

USER_AGENT = "reallymuted-policy-fetch/1 (research: privacy policies of video-conferencing apps)"
TIMEOUT_S = 60
# Elements whose text is not the document's (scripts, styles, navigation chrome).
SKIPPED = {"script", "style", "noscript", "template", "svg", "head"}
BLOCKS = {"p", "div", "li", "tr", "br", "h1", "h2", "h3", "h4", "h5", "h6", "section", "td",
          "th", "article", "dt", "dd", "blockquote", "pre", "table", "ul", "ol"}  # fmt: skip


class _Text(HTMLParser):
    """The visible text of an HTML page, a line per block element (so that the review's
    sentence splitter sees list items and table cells as units of their own)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED:
            self.skipping += 1
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line) + "\n"


def pdf_text(data: bytes) -> tuple[str, str]:
    """(text, how) of a PDF: poppler's pdftotext when installed; else no text, and why."""
    tool = shutil.which("pdftotext")
    if tool is None:
        return "", "not converted: a PDF, and pdftotext (poppler-utils) is not installed"
    with tempfile.TemporaryDirectory() as folder:
        pdf = Path(folder) / "document.pdf"
        pdf.write_bytes(data)
        run = subprocess.run([tool, "-layout", "-enc", "UTF-8", str(pdf), "-"],
                             capture_output=True, timeout=120, check=False)  # fmt: skip
    if run.returncode != 0:
        return "", f"not converted: pdftotext failed ({run.stderr.decode(errors='replace')[:200]})"
    return run.stdout.decode("utf-8", errors="replace"), "pdftotext -layout"


def to_text(data: bytes, content_type: str, charset: str | None) -> tuple[str, str]:
    """The document's text and how it was made, by what the server said it sent."""
    if content_type == "application/pdf" or data[:5] == b"%PDF-":
        return pdf_text(data)
    decoded = data.decode(charset or "utf-8", errors="replace")
    if "html" in content_type or decoded.lstrip()[:200].lower().startswith(("<!doctype", "<html")):
        return html_text(decoded), "HTML: visible text, a line per block element"
    return decoded, "plain text, as served"


def fetch_document(url: str, outputs: dict[str, str | Path], meta: dict[str, Any]) -> dict:
    """Download ``url`` into ``outputs`` (``raw``, ``text``, ``record``); returns the record.

    ``meta`` (app, document id, title, the version the corpus quotes) goes into the record. A
    failed download raises (urllib's error, naming the URL): with ``policy.fetch`` on, a
    document that cannot be had fails its job rather than leave a text that is not the
    vendor's."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    fetched_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        data = response.read()
        final_url = response.geturl()
        content_type = response.headers.get_content_type()
        charset = response.headers.get_content_charset()
        status = getattr(response, "status", None)
    text, how = to_text(data, content_type, charset)
    with atomic_path(outputs["raw"]) as tmp:
        tmp.write_bytes(data)
    write_text(outputs["text"], text)
    record = {
        **meta,
        "url": url,
        "final_url": final_url,
        "http_status": status,
        "fetched_at_utc": fetched_at,
        "content_type": content_type,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "text_from": how,
        "text_chars": len(text),
    }
    write_json(outputs["record"], record)
    return record
