"""The documentation's relative links resolve: every file, folder and #anchor named in README.md and docs/*.md exists,
and every docs page can be reached from the README."""

import os
import re
import unicodedata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = [os.path.join(ROOT, "README.md")] + sorted(
    os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(path: str) -> list[str]:
    """The lines of a Markdown file outside fenced code blocks."""
    lines, fenced = [], False
    for line in open(path, encoding="utf-8").read().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces to hyphens."""
    text = INLINE_CODE.sub(lambda match: match.group(0)[1:-1], heading).strip().lower()
    text = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
    found, seen = set(), {}
    for line in prose_lines(path):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: str) -> list[str]:
    return [target for line in prose_lines(path) for target in LINK.findall(INLINE_CODE.sub("``", line))]


def local_links(path: str) -> list[str]:
    return [t for t in links(path) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in local_links(page):
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), file_part)) if file_part else page
        if not os.path.exists(resolved):
            broken.append(f"{target}: no such file or folder")
        elif anchor and (not resolved.endswith(".md") or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading with anchor #{anchor} in {os.path.relpath(resolved, ROOT)}")
    assert not broken, f"{os.path.relpath(page, ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    reached, todo = set(), [os.path.join(ROOT, "README.md")]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in local_links(page):
            file_part = target.partition("#")[0]
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), file_part)) if file_part else page
            if resolved.endswith(".md") and os.path.isfile(resolved):
                todo.append(resolved)
    unreached = [os.path.relpath(p, ROOT) for p in PAGES if p not in reached]
    assert not unreached, f"not linked from README.md (directly or through other pages): {unreached}"


def test_slugs_follow_githubs_rule():
    assert slug("Configuration (`SasaConfig`)") == "configuration-sasaconfig"
    assert slug("`torch.compile`") == "torchcompile"
    assert slug("The fused kernel's build") == "the-fused-kernels-build"
    assert slug("Converting CodeBERT and other RoBERTa-family checkpoints") == (
        "converting-codebert-and-other-roberta-family-checkpoints")
