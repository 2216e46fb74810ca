"""The documentation's links resolve: every relative link and every repository path the docs name exists, every
`#anchor` is a heading of its file, and every section a doc or a code comment cites by name ("docs/design.md,
"Words and segments"") is a heading of that doc. Cheap (text only), so docs that move or rename sections fail
here instead of leaving readers at a dead end."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "runner" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Build outputs and placeholders the docs name on purpose (runner/build/..., samples/NN.wav, DIR/...).
SKIP = re.compile(r"(^|/)build[^/]*(/|$)|NN|[*<>]|\.\.\.|^artifacts/")


def _expand(path: str) -> list[str]:
    """`runner/src/output.{h,cpp}` -> both files."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(",") for q in _expand(path[: m.start()] + alt + path[m.end() :])]


def _exists(doc: Path, path: str) -> bool:
    return (ROOT / path).exists() or (doc.parent / path).exists()


def _checked(doc: Path, path: str) -> bool:
    """A path is ours to check when its first part is a directory of the repository or next to the doc."""
    first = path.split("/")[0]
    return "/" in path and not SKIP.search(path) and ((ROOT / first).is_dir() or (doc.parent / first).is_dir())


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def _headings(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6} +(.+)$", text, flags=re.M)]


def _sections(doc: Path) -> list[str]:
    """Headings, and the bold lead of a paragraph (the performance log's sections), without backticks."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    leads = [m.group(1) for m in re.finditer(r"^\*\*(.+?)\*\*", text, flags=re.M)]
    return [h.replace("`", "").lower() for h in _headings(doc) + leads]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_paths_resolve(doc: Path):
    text = doc.read_text()
    bad = []
    for m in re.finditer(r"\]\(([^)\s]+)\)", text):  # [text](target)
        target, _, anchor = m.group(1).partition("#")
        if re.match(r"\w+://", target):
            continue
        dest = (doc.parent / target) if target else doc
        if not dest.exists():
            bad.append(f"link {m.group(1)}")
        elif anchor and dest.suffix == ".md" and anchor not in {_slug(h) for h in _headings(dest)}:
            bad.append(f"anchor {m.group(1)}")
    for m in re.finditer(r"`([^`\s]+)`", text):  # `path/in/the/repo`
        path = m.group(1).split("::")[0].rstrip(":,.")
        if _checked(doc, path):
            bad += [f"path {p}" for p in _expand(path) if not _exists(doc, p)]
    assert not bad, f"{doc.relative_to(ROOT)}: " + "; ".join(bad)


# `docs/design.md, "Words and segments"`, `design.md "Words and segments"`, `docs/model.md ("Mel front-end")`
_CITE = re.compile(r"\b(design|model|verification|robustness|performance)\.md\]?(?:\([^)]*\))?,?\s*\(?\"([^\"]+)\"")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.md", "*.py", "*.h", "*.cpp", "*.c"], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:  # not a git checkout: the docs alone
        return DOCS
    return [ROOT / f for f in out.stdout.split()]


def test_cited_sections_exist():
    sections = {name: _sections(ROOT / "docs" / f"{name}.md") for name in
                ("design", "model", "verification", "robustness", "performance")}
    bad = []
    for f in _tracked():
        if not f.exists() or f == Path(__file__).resolve():
            continue
        for m in _CITE.finditer(f.read_text(errors="replace")):
            name = m.group(1)
            section = re.sub(r"\s*\n\s*(?://|#|\*)?\s*", " ", m.group(2)).replace("`", "").lower()  # wrapped comments
            if not any(section in h for h in sections[name]):
                bad.append(f"{f.relative_to(ROOT)}: {name}.md \"{section}\"")
    assert not bad, "sections cited but not found: " + "; ".join(bad)


def test_design_lists_every_source_file():
    """docs/design.md "Files" names every source file under voxtral_rt/, export/, runner/, bench/ and tools/ with its
    job (the modules of voxtral_rt/ by their bare names). A new file needs its row there."""
    names = set()
    for m in re.finditer(r"`([^`\s]+)`", (ROOT / "docs" / "design.md").read_text()):
        names.update(_expand(m.group(1)))
    files = [f.relative_to(ROOT).as_posix() for d in ("voxtral_rt", "export", "runner", "bench", "tools")
             for f in (ROOT / d).rglob("*") if f.is_file() and f.suffix in {".py", ".h", ".cpp", ".c", ".map"}
             and not any(p.startswith("build") for p in f.relative_to(ROOT).parts) and "__pycache__" not in f.parts]
    missing = [f for f in files if f not in names and not (f.count("/") == 1 and f.startswith("voxtral_rt/")
                                                           and f.split("/")[1] in names)]
    assert not missing, "add to docs/design.md, \"Files\": " + ", ".join(sorted(missing))
