"""The README is a front page and the docs/ pages hold the rest: a size limit, links that resolve (files and
GitHub-style heading anchors), and every docs page reachable from the README. Pure text, no model."""
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from lopt_core.lab.book import markdown_links

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_LIMIT = 12_000  # bytes: a front page, the rest lives in docs/

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")


def prose_lines(path: Path):
    """(line number, text) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
        elif fence is not None and opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) \
                and not line.strip()[len(opened.group(1)):].strip():
            fence = None
        elif fence is None:
            yield number, line


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lowercase, drop what is not a letter, digit, space, hyphen or underscore
    (markup such as backticks included), spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading anchors on its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2, ... for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path):
        found = HEADING.match(line)
        if not found:
            continue
        base = slug(found.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path):
    """(line number, target) of every inline markdown link and image outside code blocks and code spans (the
    library's reader, the one the book relinks with)."""
    for number, _, target in markdown_links(path.read_text(encoding="utf-8")):
        yield number, target


def is_external(target: str) -> bool:
    return re.match(r"^(https?:|mailto:)", target, re.I) is not None


def problems_of(path: Path) -> list[str]:
    """What is wrong with the relative links of one markdown file, one sentence each."""
    problems = []
    where = path.relative_to(ROOT)
    for number, target in links(path):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{where}:{number}: link ({target}) points to {file_part}, which does not exist "
                            f"(looked for {linked})")
            continue
        if anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
            problems.append(f"{where}:{number}: link ({target}): {linked.relative_to(ROOT)} has no heading whose "
                            f"anchor is #{anchor}")
    return problems


def test_the_readme_is_a_front_page():
    size = README.stat().st_size
    assert size <= README_LIMIT, (f"README.md is {size:,} bytes, over the front page's {README_LIMIT:,}: move "
                                  "detail into a docs/ page and link it")


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    problems = problems_of(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / unquote(target.partition("#")[0])).resolve()
              for _, target in links(README) if not is_external(target) and target.partition("#")[0]}
    missing = [str(page.relative_to(ROOT)) for page in DOCS if page.resolve() not in linked]
    assert not missing, f"docs pages that README.md does not link: {', '.join(missing)}"


def test_the_methods_page_lists_every_registry_key():
    from lopt_core.methods import list_methods
    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    assert listed == set(list_methods()), (f"docs/methods.md's registry table lists {sorted(listed)}; the registry "
                                           f"has {list_methods()}: add or remove a row")
    front = README.read_text(encoding="utf-8")
    assert all(f"`{key}`" in front for key in list_methods()), "README.md's methods paragraph misses a registry key"


def test_slugs_follow_github():
    assert slug("Backbones, lengths and precision") == "backbones-lengths-and-precision"
    assert slug("Why LoPT lags on yes/no") == "why-lopt-lags-on-yesno"
    assert slug("Quality results, under the protocol") == "quality-results-under-the-protocol"
    assert slug("The methods: the papers' choices and the kit's") == "the-methods-the-papers-choices-and-the-kits"
    assert slug("`lopt-kit` from the shell") == "lopt-kit-from-the-shell"
    assert slug("Größe und Ränge") == "größe-und-ränge"


def test_the_checker_sees_a_broken_link_and_ignores_code(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Top\n\n## Same\n\n## Same\n\n[ok](#same-1) [file](b.md#top)\n"
                                   "[bad anchor](#nowhere) [no file](c.md) `[code](c.md)`\n\n"
                                   "```\n# not a heading\n[in a fence](c.md)\n```\n[after](#not-a-heading)\n")
    (tmp_path / "b.md").write_text("# Top\n")
    problems = problems_of(tmp_path / "a.md")
    assert len(problems) == 3, problems
    assert "a.md:8: link (#nowhere): a.md has no heading whose anchor is #nowhere" in problems
    assert any("link (c.md) points to c.md, which does not exist" in p for p in problems)
    assert any("#not-a-heading" in p for p in problems)


def test_the_book_refuses_a_page_that_loads_from_the_web(tmp_path):
    from lopt_core.lab.book import check_offline

    (tmp_path / "a.html").write_text('<p>x</p><script src="https://cdn.example.org/x.js"></script>')
    (tmp_path / "b.html").write_text("<script>var s = document.createElement('script');\n"
                                     "s.src = 'https://unpkg.com/embed.js';</script>")
    (tmp_path / "c.html").write_text('<a href="https://example.org/read">a link to read</a><script src="x.js"></script>'
                                     '<script>var ns = "http://www.w3.org/2000/svg";</script>')
    found = check_offline(tmp_path)
    assert [f.split(":")[0] for f in found] == ["a.html", "b.html"]
    assert "unpkg.com" in found[1]


def test_a_lesson_in_the_book_keeps_its_outputs_but_not_its_progress_bars(tmp_path):
    import json

    from lopt_core.lab import book
    from lopt_core.lab.notebooks import list_notebooks

    source = list_notebooks(["01"])[0]
    nb = json.loads(source.read_text())
    widget = "application/vnd.jupyter.widget-view+json"
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [
        {"output_type": "display_data", "metadata": {}, "data": {widget: {"model_id": "a"},
                                                                 "text/plain": ["run:   0%|          | 0/16"]}},
        {"output_type": "display_data", "metadata": {}, "data": {widget: {"model_id": "b"},
                                                                 "text/plain": ["VBox(children=(IntSlider(),))"]}},
        {"output_type": "stream", "name": "stdout", "text": ["kept\n"]}]
    nb["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    nb["metadata"]["papermill"] = {"parameters": {"profile": "demo"}, "end_time": "2026-12-05T10:00:00"}
    (tmp_path / source.stem).mkdir()
    (tmp_path / source.stem / source.name).write_text(json.dumps(nb))
    pages = {f"notebooks/{p.name}": f"lessons/{p.stem}.ipynb" for p in list_notebooks()}
    pages["docs/glossary.md"] = "glossary.md"
    shown = book._lesson(source, tmp_path, pages[f"notebooks/{source.name}"], pages)
    assert "widgets" not in shown["metadata"]
    outputs = next(c for c in shown["cells"] if c["cell_type"] == "code")["outputs"]
    assert len(outputs) == 2 and widget not in outputs[0]["data"] and "live kernel" in outputs[0]["data"]["text/plain"]
    assert outputs[1]["text"] == ["kept\n"]
    text = "".join("".join(c["source"]) for c in shown["cells"] if c["cell_type"] == "markdown")
    assert "with profile `demo` on 2026-12-05" in text
    assert "(02_lopt_low_rank_prompts.html)" in text and "(../glossary.html)" in text and ".ipynb)" not in text


def test_the_book_relinks_prose_and_leaves_code_alone():
    from lopt_core.lab.book import ROOT, _relink

    pages = {"docs/usage.md": "usage.md", "notebooks/01_x.ipynb": "lessons/01_x.ipynb"}
    text = ("See [usage](docs/usage.md#tasks), [lesson](notebooks/01_x.ipynb), [code](lopt_core/cli.py), "
            "[web](HTTPS://example.org) and `d[i](j)`.\n```python\nscores = table[k](x)\n```\n")
    out = _relink(text, ROOT / "README.md", "index.md", pages)
    assert "[usage](usage.md#tasks)" in out and "[lesson](lessons/01_x.ipynb)" in out
    assert "code and" not in out and "[code]" not in out and "code, [web]" in out  # a file the book lacks: text
    assert "[web](HTTPS://example.org)" in out and "`d[i](j)`" in out and "scores = table[k](x)" in out
    html = _relink("[next](01_x.ipynb)", ROOT / "notebooks" / "00_y.ipynb", "lessons/00_y.ipynb", pages, html=True)
    assert html == "[next](01_x.html)"


def test_the_book_relinks_what_the_checker_reads_and_leaves_code_alone():
    """One Markdown link reader for both: a link (a label with code in it included) to a page of the book is pointed
    at that page, one to a file the book has no page for becomes its text, code spans and fences stay as written."""
    from lopt_core.lab.book import ROOT as REPO
    from lopt_core.lab.book import _relink

    text = ("See [usage](usage.md#x), `[code](usage.md)`, [`lopt-kit` ref](layout.md) and [gone](nothing.md).\n"
            "```\n[fenced](usage.md)\n```\n![pic](img.png)")
    pages = {"docs/usage.md": "usage.md", "docs/layout.md": "layout.md"}
    assert _relink(text, REPO / "docs" / "results.md", "results.md", pages, html=True) == (
        "See [usage](usage.html#x), `[code](usage.md)`, [`lopt-kit` ref](layout.html) and gone.\n"
        "```\n[fenced](usage.md)\n```\n![pic](img.png)")
    assert [(n, target) for n, _, target in markdown_links(text)] == [
        (1, "usage.md#x"), (1, "layout.md"), (1, "nothing.md"), (5, "img.png")]


def test_a_notebook_pages_contents_point_at_its_headings():
    """mkdocs-jupyter's contents drop a heading's inline code from its anchor, its ids keep it: each contents link
    goes to the heading whose id it begins, or whose text without the code it names; none is guessed by place."""
    from lopt_core.lab.book import _toc_to_headings

    toc = "".join(f'<a href="#{a}" class="md-nav__link">.</a>' for a in ("2-lopt-1-step-by-step", "first-the-start",
                                                                          "intro", "nowhere"))
    body = ('<h1 id="t">T</h1><h2 id="intro">Intro</h2><h2 id="2-lopt-1-step-by-step-x-u-v">2. LoPT-1 step by step: '
            '<code>X = U V</code></h2><h2 id="x0-first-the-start"><code>X0</code> first: the start</h2>')
    fixed = _toc_to_headings(toc + body)
    assert re.findall(r'href="#([^"]*)"', fixed) == ["2-lopt-1-step-by-step-x-u-v", "x0-first-the-start", "intro",
                                                     "nowhere"]


def test_the_book_says_it_needs_a_source_checkout(tmp_path, monkeypatch):
    """Installed without the repository (a wheel holds the library only), the book says what it needs."""
    from lopt_core.lab import book

    monkeypatch.setattr(book, "ROOT", tmp_path)
    with pytest.raises(book.BookError, match="source checkout.*has no notebooks, docs, README.md"):
        book.build(tmp_path / "site")
    assert not (tmp_path / "site").exists()
