"""Attachment text extractors compared: `python bench/extractors.py FOLDER... [--timeout 20]`.

For issue 13 (text from attachments). Walks each FOLDER for documents (PDF, DOCX,
DOC, XLSX, XLS, ODS, ODT, ODP, PPTX, RTF, by file extension) and, for every
candidate library that is importable (the rest are listed as "not installed";
the script runs with none of them installed), extracts the text of each file
of each format the candidate reads. Figures per format and candidate:

- files tried, succeeded, failed (by exception class) and timed out;
- total characters extracted;
- median and p95 milliseconds per file (successful files, library already
  imported; the import is timed apart);
- peak RSS of the worker process (ru_maxrss, with its own children, e.g.
  antiword), which does nothing but that candidate on that format;
- known words found: for a few files of the test corpora (KNOWN below, read
  from the files themselves) whether the extracted text contains the word.

Each (candidate, format) pair runs in its own worker subprocess (this script
with `--worker NAME`), fed one file at a time over a pipe. A file that takes
longer than --timeout seconds gets the worker killed (a timeout is recorded,
with the worker's VmHWM from /proc) and a fresh worker carries on with the next
file; a worker that dies (segfault, abort) is recorded as a crash the same way.
`--mem-mb N` sets RLIMIT_AS in the workers (off by default: some candidates
reserve a lot of address space they never touch).

Prints a table and one JSON line of figures at the end. Folders used for
docs/attachments.md: /work/shared/corpora/documents (test files of python-docx,
python-pptx, xlrd and pdfminer.six) and /work/shared/corpora/fixtures (a .doc
and a PDF attached to test mails).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import resource
import selectors
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".doc": "doc",
    ".xlsx": "xlsx",
    ".xls": "xls",
    ".ods": "ods",
    ".odt": "odt",
    ".odp": "odp",
    ".pptx": "pptx",
    ".rtf": "rtf",
}
ORDER = list(dict.fromkeys(FORMATS.values()))

# Words each file must yield, read from the file itself (the XML inside the
# OOXML zip, the cell values, the PDF rendered to an image, the .doc's text in
# a word processor); a key matches the end of a file's path.
KNOWN = {
    "python-docx/tests/test_files/test.docx": "python-docx was here",
    "python-docx/features/steps/test_files/hdr-header-footer.docx": "Header for section-1",
    "python-docx/features/steps/test_files/par-hyperlinks.docx": "awesome hyperlink",
    "python-pptx/features/steps/test_files/test.pptx": "Presentation Title Text",
    "python-pptx/features/steps/test_files/tbl-cell.pptx": "unladen swallows",
    "python-pptx/features/steps/test_files/txt-fit-text.pptx": "is called type design",
    "xlrd/tests/samples/profiles.xls": "PROFIL",
    "pdfminer.six/samples/simple1.pdf": "World",
    "pdfminer.six/samples/nonfree/dmca.pdf": "Vessel Hull Design Protection Act",
    "zbateson-mail-mime-parser/tests/_data/emails/files/test.doc": "Petroselinum crispum",
}

OOXML_MAX_UNZIPPED = 200 * 1024 * 1024  # zip bomb guard of the defusedxml reader


# --- the candidates (run in the worker; each imports its library lazily) ---


def _pypdf(path: str) -> str:
    from pypdf import PdfReader

    reader = PdfReader(path)
    if reader.is_encrypted:
        reader.decrypt("")  # what a mail reader does: try the empty user password
    return "\n".join(page.extract_text() or "" for page in reader.pages)


def _pdfminer(path: str) -> str:
    from pdfminer.high_level import extract_text

    return str(extract_text(path))


def _pypdfium2(path: str) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path)
    try:
        parts = []
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            parts.append(textpage.get_text_range())
            textpage.close()
            page.close()
        return "\n".join(parts)
    finally:
        pdf.close()


def _python_docx(path: str) -> str:
    from docx import Document
    from docx.text.paragraph import Paragraph

    def blocks(container: Any) -> Iterator[str]:
        for item in container.iter_inner_content():
            if isinstance(item, Paragraph):
                yield item.text
            else:
                for row in item.rows:
                    for cell in row.cells:
                        yield from blocks(cell)

    doc = Document(path)
    parts = list(blocks(doc))
    for section in doc.sections:
        for part in (section.header, section.footer):
            if not part.is_linked_to_previous:
                parts.extend(blocks(part))
    return "\n".join(parts)


def _docx2python(path: str) -> str:
    from docx2python import docx2python

    with docx2python(path) as result:
        return str(result.text)


def _ooxml_defusedxml(path: str) -> str:
    """Our own reader: the text runs of the document's XML parts, parsed by
    defusedxml (no DTD, no entities), after a zip bomb check."""
    import re
    import zipfile

    from defusedxml.ElementTree import fromstring

    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if sum(info.file_size for info in infos) > OOXML_MAX_UNZIPPED:
            raise ValueError("zip expands past the cap")
        names = [info.filename for info in infos]
        if "word/document.xml" in names:
            wanted = re.compile(r"word/(document|header\d*|footer\d*|footnotes|endnotes)\.xml")
        else:
            wanted = re.compile(r"ppt/(slides/slide|notesSlides/notesSlide)\d+\.xml")

        def number(name: str) -> tuple[str, int]:
            digits = re.findall(r"\d+", name)
            return (name.rstrip("0123456789.xml"), int(digits[-1]) if digits else 0)

        parts = []
        for name in sorted((n for n in names if wanted.fullmatch(n)), key=number):
            root = fromstring(archive.read(name), forbid_dtd=True)
            for para in root.iter():
                if not para.tag.endswith("}p"):
                    continue
                runs = [el.text or "" for el in para.iter() if el.tag.endswith("}t")]
                if runs:
                    parts.append("".join(runs))
        return "\n".join(parts)


def _python_pptx(path: str) -> str:
    from pptx import Presentation

    def shape_text(shape: Any) -> Iterator[str]:
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            yield shape.text_frame.text
        if getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                for cell in row.cells:
                    yield cell.text
        for child in getattr(shape, "shapes", ()):
            yield from shape_text(child)

    parts = []
    for slide in Presentation(path).slides:
        for shape in slide.shapes:
            parts.extend(shape_text(shape))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            parts.append(slide.notes_slide.notes_text_frame.text)
    return "\n".join(parts)


def _cells(rows: Any) -> Iterator[str]:
    for row in rows:
        yield "\t".join(str(value) for value in row if value is not None and value != "")


def _openpyxl(path: str) -> str:
    from openpyxl import load_workbook

    book = load_workbook(path, read_only=True, data_only=True)
    try:
        return "\n".join(
            line for sheet in book.worksheets for line in _cells(sheet.iter_rows(values_only=True))
        )
    finally:
        book.close()


def _calamine(path: str) -> str:
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(path)
    return "\n".join(
        line
        for name in book.sheet_names
        for line in _cells(book.get_sheet_by_name(name).to_python())
    )


def _xlrd(path: str) -> str:
    import xlrd

    book = xlrd.open_workbook(path, on_demand=True)
    try:
        parts = []
        for index in range(book.nsheets):
            sheet = book.sheet_by_index(index)
            parts.extend(_cells([cell.value for cell in row] for row in sheet.get_rows()))
            book.unload_sheet(index)
        return "\n".join(parts)
    finally:
        book.release_resources()


def _odfpy(path: str) -> str:
    from odf import teletype, text
    from odf.opendocument import load

    doc = load(path)
    return "\n".join(
        teletype.extractText(element)
        for kind in (text.H, text.P)
        for element in doc.getElementsByType(kind)
    )


def _striprtf(path: str) -> str:
    from striprtf.striprtf import rtf_to_text

    return str(rtf_to_text(Path(path).read_text("latin-1")))


def _antiword(path: str) -> str:
    done = subprocess.run(["antiword", "-w", "0", path], capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.decode("utf-8", "replace").strip()[:200])
    return done.stdout.decode("utf-8", "replace")


_EXTRACTOUS: Any = None


def _extractous(path: str) -> str:
    global _EXTRACTOUS
    from extractous import Extractor

    if _EXTRACTOUS is None:
        # Its default caps the text at 500,000 characters; lift it to compare.
        _EXTRACTOUS = Extractor().set_extract_string_max_length(100_000_000)
    text, _metadata = _EXTRACTOUS.extract_file_to_string(path)
    return str(text)


def _kreuzberg(path: str) -> str:
    from kreuzberg import extract_file_sync

    return str(extract_file_sync(path).content)


@dataclass(frozen=True)
class Candidate:
    name: str
    dist: str  # distribution for the version (or a program, for antiword)
    modules: tuple[str, ...]  # what the worker imports before timing files
    formats: tuple[str, ...]
    extract: Callable[[str], str]
    program: str = ""  # needs this program on PATH instead of a module

    def available(self) -> bool:
        if self.program:
            return shutil.which(self.program) is not None
        return all(importlib.util.find_spec(m.split(".")[0]) is not None for m in self.modules)

    def version(self) -> str:
        if self.program:
            return "system"
        try:
            return importlib.metadata.version(self.dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"


OOXML = ("docx", "pptx")
CANDIDATES = [
    Candidate("pypdf", "pypdf", ("pypdf",), ("pdf",), _pypdf),
    Candidate("pdfminer.six", "pdfminer.six", ("pdfminer.high_level",), ("pdf",), _pdfminer),
    Candidate("pypdfium2", "pypdfium2", ("pypdfium2",), ("pdf",), _pypdfium2),
    Candidate("python-docx", "python-docx", ("docx",), ("docx",), _python_docx),
    Candidate("docx2python", "docx2python", ("docx2python",), ("docx",), _docx2python),
    Candidate(
        "defusedxml-ooxml", "defusedxml", ("defusedxml.ElementTree",), OOXML, _ooxml_defusedxml
    ),
    Candidate("python-pptx", "python-pptx", ("pptx",), ("pptx",), _python_pptx),
    Candidate("openpyxl", "openpyxl", ("openpyxl",), ("xlsx",), _openpyxl),
    Candidate(
        "python-calamine",
        "python-calamine",
        ("python_calamine",),
        ("xlsx", "xls", "ods"),
        _calamine,
    ),
    Candidate("xlrd", "xlrd", ("xlrd",), ("xls",), _xlrd),
    Candidate("odfpy", "odfpy", ("odf.opendocument",), ("ods", "odt", "odp"), _odfpy),
    Candidate("striprtf", "striprtf", ("striprtf.striprtf",), ("rtf",), _striprtf),
    Candidate("antiword", "antiword", (), ("doc",), _antiword, program="antiword"),
    Candidate("kreuzberg", "kreuzberg", ("kreuzberg",), tuple(ORDER), _kreuzberg),
    Candidate("extractous", "extractous", ("extractous",), tuple(ORDER), _extractous),
]
BY_NAME = {c.name: c for c in CANDIDATES}


# --- worker side ---


def peak_rss_kb() -> int:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children)


def worker(name: str, mem_mb: int) -> int:
    import logging
    import warnings

    if mem_mb:
        limit = mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The protocol gets the real stdout; whatever a library prints (Python or
    # native code writing to fd 1) goes to stderr instead.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    candidate = BY_NAME[name]
    started = time.perf_counter()
    for module in candidate.modules:
        importlib.import_module(module)
    ready = {"import_ms": (time.perf_counter() - started) * 1000, "rss_kb": peak_rss_kb()}
    proto.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        started = time.perf_counter()
        answer: dict[str, Any] = {}
        try:
            text = candidate.extract(request["path"])
        except Exception as exc:  # measured: every failure is counted by class
            answer = {"ok": False, "error": type(exc).__name__}
        else:
            folded = " ".join(text.split()).casefold()
            found = [w for w in request["words"] if " ".join(w.split()).casefold() in folded]
            answer = {"ok": True, "chars": len(text), "found": found}
        answer["ms"] = (time.perf_counter() - started) * 1000
        answer["rss_kb"] = peak_rss_kb()
        proto.write(json.dumps(answer) + "\n")
    return 0


# --- driver side ---


class Worker:
    """One worker subprocess for one candidate, fed a file at a time."""

    def __init__(self, name: str, mem_mb: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", name, "--mem-mb", str(mem_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)

    def read(self, timeout: float) -> dict[str, Any] | str:
        """The next answer, or "timeout" / "crash (...)"."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not self.selector.select(left):
                return "timeout"
            chunk = os.read(self.fd, 65536)
            if not chunk:
                code = self.proc.wait()
                return f"crash ({'signal ' + str(-code) if code < 0 else 'exit ' + str(code)})"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, path: str, words: list[str], timeout: float) -> dict[str, Any] | str:
        try:
            self.stdin.write((json.dumps({"path": path, "words": words}) + "\n").encode())
            self.stdin.flush()
        except BrokenPipeError:
            return "crash (pipe)"
        return self.read(timeout)

    def hwm_kb(self) -> int:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.selector.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.selector.close()


@dataclass
class Row:
    fmt: str
    name: str
    version: str
    tried: int = 0
    ok: int = 0
    timeouts: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failed_files: dict[str, list[str]] = field(default_factory=dict)
    chars: int = 0
    ms: list[float] = field(default_factory=list)
    import_ms: float = 0.0
    rss_kb: int = 0
    known: int = 0
    missed: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "format": self.fmt,
            "library": self.name,
            "version": self.version,
            "tried": self.tried,
            "ok": self.ok,
            "failed": dict(self.failures),
            "failed_files": self.failed_files,
            "timeouts": self.timeouts,
            "chars": self.chars,
            "ms_p50": round(percentile(self.ms, 50), 2),
            "ms_p95": round(percentile(self.ms, 95), 2),
            "ms_total": round(sum(self.ms), 1),
            "import_ms": round(self.import_ms, 1),
            "peak_rss_mb": round(self.rss_kb / 1024, 1),
            "known_words": f"{self.known - len(self.missed)}/{self.known}",
            "missed": self.missed,
        }


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def start(name: str, mem_mb: int, row: Row) -> Worker | None:
    w = Worker(name, mem_mb)
    ready = w.read(120)
    if isinstance(ready, str):
        row.failures[f"worker start: {ready}"] += 1
        row.failed_files.setdefault(f"worker start: {ready}", []).append("(all)")
        w.kill()
        return None
    if not row.import_ms:
        row.import_ms = ready["import_ms"]
    row.rss_kb = max(row.rss_kb, ready["rss_kb"])
    return w


def run_pair(
    candidate: Candidate, fmt: str, files: list[Path], base: Path, timeout: float, mem_mb: int
) -> Row:
    row = Row(fmt, candidate.name, candidate.version())
    w: Worker | None = None
    for path in files:
        if w is None:
            w = start(candidate.name, mem_mb, row)
            if w is None:
                break
        words = [word for key, word in KNOWN.items() if path.as_posix().endswith("/" + key)]
        rel = path.relative_to(base).as_posix()
        row.tried += 1
        answer = w.ask(str(path), words, timeout)
        if isinstance(answer, str):
            row.rss_kb = max(row.rss_kb, w.hwm_kb())
            w.kill()
            w = None
            if answer == "timeout":
                row.timeouts += 1
            else:
                row.failures[answer] += 1
            row.failed_files.setdefault(answer, []).append(rel)
            row.known += len(words)
            row.missed.extend(f"{rel}: {word}" for word in words)
            continue
        row.rss_kb = max(row.rss_kb, answer["rss_kb"])
        row.known += len(words)
        row.missed.extend(f"{rel}: {word}" for word in words if word not in answer.get("found", []))
        if answer["ok"]:
            row.ok += 1
            row.chars += answer["chars"]
            row.ms.append(answer["ms"])
        else:
            row.failures[answer["error"]] += 1
            row.failed_files.setdefault(answer["error"], []).append(rel)
    if w is not None:
        w.close()
    return row


def collect(folders: list[Path], formats: set[str]) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {fmt: [] for fmt in ORDER if fmt in formats}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            fmt = FORMATS.get(path.suffix.lower())
            if fmt in found and path.is_file():
                found[fmt].append(path)
    return {fmt: files for fmt, files in found.items() if files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="*")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per file")
    parser.add_argument("--mem-mb", type=int, default=0, help="RLIMIT_AS per worker (0: none)")
    parser.add_argument("--only", help="comma-separated candidate names")
    parser.add_argument("--formats", help="comma-separated formats (default: all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.mem_mb)
    if not args.folder:
        parser.error("FOLDER is required")
    folders = [Path(folder).resolve() for folder in args.folder]
    formats = set(args.formats.split(",")) if args.formats else set(ORDER)
    chosen = [BY_NAME[n] for n in args.only.split(",")] if args.only else CANDIDATES
    files = collect(folders, formats)
    base = Path(os.path.commonpath(folders)) if folders else Path("/")
    base = base.parent if base in folders and len(folders) == 1 else base
    missing = [c.name for c in chosen if not c.available()]
    rows: list[Row] = []
    started = time.monotonic()
    for fmt, paths in files.items():
        for candidate in chosen:
            if fmt in candidate.formats and candidate.name not in missing:
                rows.append(run_pair(candidate, fmt, paths, base, args.timeout, args.mem_mb))
    seconds = time.monotonic() - started

    head = (
        f"{'format':6} {'library':16} {'version':9} {'ok/tried':>9} {'fail':>4} {'t/o':>3} "
        f"{'chars':>9} {'p50 ms':>8} {'p95 ms':>8} {'total s':>7} {'import':>7} {'RSS MB':>7} "
        f"{'words':>5}"
    )
    counts = ", ".join(f"{len(p)} {fmt}" for fmt, p in files.items())
    print(" ".join(map(str, folders)) + ": " + counts)
    print(head)
    print("-" * len(head))
    for row in rows:
        f = row.figures()
        print(
            f"{row.fmt:6} {row.name:16} {row.version[:9]:9} {f'{row.ok}/{row.tried}':>9} "
            f"{sum(row.failures.values()):>4} {row.timeouts:>3} {row.chars:>9} "
            f"{f['ms_p50']:>8.1f} {f['ms_p95']:>8.1f} {sum(row.ms) / 1000:>7.2f} "
            f"{row.import_ms:>7.0f} "
            f"{f['peak_rss_mb']:>7.1f} {f['known_words']:>5}"
        )
    print()
    for row in rows:
        for error, rels in row.failed_files.items():
            names = ", ".join(Path(rel).name for rel in rels[:4]) + (", ..." if rels[4:] else "")
            print(f"failed  {row.fmt:5} {row.name}: {error} x{len(rels)} ({names})")
        for miss in row.missed:
            print(f"missed  {row.fmt:5} {row.name}: {miss}")
    for name in missing:
        print(f"not installed: {name}")
    figures = {
        "folders": [str(folder) for folder in folders],
        "files": {fmt: len(p) for fmt, p in files.items()},
        "timeout_s": args.timeout,
        "mem_mb": args.mem_mb,
        "seconds": round(seconds, 1),
        "not_installed": missing,
        "rows": [row.figures() for row in rows],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
