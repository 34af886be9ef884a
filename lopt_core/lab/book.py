"""The lessons as a static site, built offline: MkDocs-Material with mkdocs-jupyter.

The book holds every numbered lesson, executed where a run left an executed copy (``make demo`` writes
``outputs/<lesson>/<lesson>.ipynb``; the notebook tests write the same layout under ``ci``) and as committed
otherwise (with a note that says so), the README as its front page, and the reference pages of ``docs/`` and
``data/README.md``. Nothing is fetched while building or reading: MkDocs-Material's web fonts are off, MathJax
is served from the site itself (MathJax 3.2.2 as the PyPI package ``sphinx-mathjax-offline`` ships it), and
``check_offline`` refuses a page that loads a script, style sheet or picture from another host. Pages are
``.html`` files (no directory URLs), so ``site/index.html`` opens from the disk too; the search needs the site
served (``python -m http.server -d site``)::

    python -m lopt_core.lab.book --executed outputs --out site     # what `make book` runs
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lopt_core.lab.notebooks import ROOT, list_notebooks

REFERENCE = {  # repository file → (page in the book, its title in the navigation)
    "docs/methods.md": ("methods.md", "The methods: the papers' choices and the kit's"),
    "docs/cli.md": ("cli.md", "The command line"),
    "docs/tasks.md": ("tasks.md", "Tasks and data"),
    "docs/backbones.md": ("backbones.md", "Backbones, lengths and precision"),
    "docs/interop.md": ("interop.md", "PEFT adapters and serving engines"),
    "docs/gpus.md": ("gpus.md", "GPUs, clusters and the environment"),
    "docs/layout.md": ("layout.md", "The package's layout"),
    "docs/results.md": ("results.md", "Measured results"),
    "docs/glossary.md": ("glossary.md", "Glossary"),
    "data/README.md": ("data.md", "The built-in data"),
}
WIDGET = "application/vnd.jupyter.widget-view+json"
MATHJAX_URL = "lopt-kit-local-mathjax"  # as mkdocs-jupyter writes MathJax's address; each page's own path replaces it
MATHJAX_TAG = re.compile(rf'<script src="{MATHJAX_URL}">\s*</script>')
MATHJAX_FILE = "tex-svg-full.js"  # one file, no fonts to fetch (SVG output)
MATHJAX_CONFIG = ("<script>window.MathJax = {tex: {inlineMath: [['$', '$'], ['\\\\(', '\\\\)']], "
                  "displayMath: [['$$', '$$'], ['\\\\[', '\\\\]']], processEscapes: true}};</script>")
REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
QUOTED_URL = re.compile(r"""["'`](?:https?:)?//(?!www\.w3\.org/)[^"'`\s]+["'`]""", re.IGNORECASE)  # w3.org: names
CSS_URL = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])((?:https?:)?//[^"')\s]+)""", re.IGNORECASE)
LOADS = {"script": ("src",), "img": ("src", "srcset"), "source": ("src", "srcset"), "iframe": ("src",),
         "video": ("src", "poster"), "audio": ("src",), "embed": ("src",), "object": ("data",), "link": ("href",)}
MERMAID = re.compile(r"<script type=\"module\">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*</script>", re.DOTALL)
PROGRESS = re.compile(r"\d+%\|")  # tqdm's text: "name:  40%|####      | 8/20 [...]"
# an inline link or image: its label (one level of nested brackets) and its target (``<...>`` and a title allowed)
LINK = re.compile(r"(!?\[(?:[^\[\]]|\[[^\[\]]*\])*\])\(\s*<?([^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# fenced blocks (``` or ~~~, up to 3 spaces in) and code spans: a link there is code, never read nor relinked
CODE = re.compile(r"^ {0,3}```.*?^ {0,3}```[ \t]*$|^ {0,3}~~~.*?^ {0,3}~~~[ \t]*$|``[^\n]*?``|`[^`\n]*`",
                  re.DOTALL | re.MULTILINE)
MARKER = ".lopt-kit-book"  # written into every site: a folder without it is never replaced


class BookError(RuntimeError):
    """The book cannot be built as asked (a tool missing, a page that would load something from the web)."""


def mathjax_folder() -> Path:
    """Where the installed MathJax 3 files are (``pip install --no-deps sphinx-mathjax-offline``)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("sphinx-mathjax-offline")
    except metadata.PackageNotFoundError as err:
        raise BookError("the book serves MathJax from its own files: pip install --no-deps "
                        "sphinx-mathjax-offline==0.0.2 (`make book` does)") from err
    return Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))


def _code(nb: dict) -> list[str]:
    """A notebook's code, cell by cell, without the cell papermill adds for the parameters it was given."""
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"
            and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


def executed_copy(executed: Path | None, lesson: Path) -> Path | None:
    """The executed copy of ``lesson`` under ``executed`` (``<executed>/<stem>/<stem>.ipynb``), if there is one
    and it ran the lesson's code as committed now (a copy of an older version is not shown as this lesson's run)."""
    if executed is None:
        return None
    found = Path(executed) / lesson.stem / lesson.name
    if not found.is_file():
        return None
    same = _code(json.loads(found.read_text(encoding="utf-8"))) == _code(json.loads(lesson.read_text(encoding="utf-8")))
    return found if same else None


def _relink(text: str, source: Path, page: str, pages: dict[str, str], html: bool = False) -> str:
    """Rewrite the relative links of ``text`` (written at ``source`` in the repository) for the book page
    ``page``: a link to a file the book holds points at its page; a link to anything else the book lacks is
    left as plain text (the book has no page for it) and so is never broken. ``html``: name pages by their
    ``.html`` file (in a notebook's cells, which MkDocs does not rewrite; it does in Markdown pages)."""
    def fix(match: re.Match) -> str:
        label, target = match.groups()
        if re.match(r"[a-z][a-z0-9+.-]*:|#|<", target, re.IGNORECASE):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = os.path.normpath(os.path.join(os.path.dirname(source.relative_to(ROOT).as_posix()), path))
        if repo_path not in pages:
            return label[1:-1] if not label.startswith("!") else match.group(0)
        new = os.path.relpath(pages[repo_path], os.path.dirname(page) or ".")
        if html and new.endswith((".md", ".ipynb")):
            new = new.rsplit(".", 1)[0] + ".html"
        return f"{label}({new}{'#' + anchor if anchor else ''})"
    code = _code_spans(text)
    return LINK.sub(lambda m: m.group(0) if _inside(m.start(), code) else fix(m), text)


def _code_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in CODE.finditer(text)]


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= position < b for a, b in spans)


def markdown_links(text: str) -> list[tuple[int, str, str]]:
    """(line number, label, target) of every inline link and image of a Markdown text outside code (fences and
    spans): what the book relinks, and what tests/test_docs.py checks."""
    code = _code_spans(text)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in LINK.finditer(text)
            if not _inside(m.start(), code)]


def _lesson(source: Path, executed: Path | None, page: str, pages: dict[str, str]) -> dict:
    """The notebook the book shows for one lesson: links rewritten to the book's pages, widget outputs
    replaced by a sentence (their state is not saved in a run), and a first note that says which run it shows."""
    copy = executed_copy(executed, source)
    nb = json.loads((copy or source).read_text(encoding="utf-8"))
    run = nb.get("metadata", {}).get("papermill", {})
    profile = run.get("parameters", {}).get("profile")
    if copy is not None:
        when = (run.get("end_time") or "")[:10]
        note = (f"*This page shows a run of the lesson with profile `{profile}`{' on ' + when if when else ''}: "
                f"the outputs are that run's. Run it yourself in JupyterLab (`make lab`) to change it.*")
    else:
        stale = executed is not None and (Path(executed) / source.stem / source.name).is_file()
        why = ("the executed copy there is of an older version of the lesson" if stale
               else "no executed copy was there when the book was built")
        note = (f"*This page shows the lesson as committed, without outputs: {why}. "
                f"`make demo NOTEBOOKS={source.name[:2]}` runs it, then `make book` shows it here.*")
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            cell["source"] = _relink(text, source, page, pages, html=True)
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET in data:
                if PROGRESS.search("".join(data.get("text/plain", ""))):
                    continue  # a progress bar: its saved text is its first frame, not what it showed
                data.pop(WIDGET)
                data["text/plain"] = ("[an interactive widget: it works in a live kernel (JupyterLab); "
                                      "the figure after it shows the same view, drawn once]")
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept
    nb.get("metadata", {}).pop("widgets", None)  # else the page fetches a widget renderer from a CDN
    title = next(i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown")
    nb["cells"].insert(title + 1, {"cell_type": "markdown", "metadata": {}, "source": note})
    return nb


def stage(executed: Path | None, folder: Path) -> dict:
    """Write the book's sources into ``folder`` (``docs/`` and ``mkdocs.yml``); return what went in."""
    docs = folder / "docs"
    docs.mkdir(parents=True)
    lessons = list_notebooks()
    pages = {"README.md": "index.md", **{k: v[0] for k, v in REFERENCE.items()},
             **{f"notebooks/{p.name}": f"lessons/{p.stem}.ipynb" for p in lessons}}
    left_out = sorted(p.name for p in (ROOT / "docs").glob("*.md") if f"docs/{p.name}" not in REFERENCE)
    if left_out:
        raise BookError(f"docs pages the book does not list: {', '.join(left_out)}: add them to book.REFERENCE")
    for extra in sorted((ROOT / "docs").iterdir()):  # pictures the pages show
        if extra.is_file() and extra.suffix != ".md":
            pages[f"docs/{extra.name}"] = extra.name
            shutil.copy2(extra, docs / extra.name)
    for repo_path, page in pages.items():
        source = ROOT / repo_path
        if source.suffix == ".md":
            (docs / page).write_text(_relink(source.read_text(encoding="utf-8"), source, page, pages), encoding="utf-8")
    shown = {}
    (docs / "lessons").mkdir()
    for source in lessons:
        page = pages[f"notebooks/{source.name}"]
        nb = _lesson(source, executed, page, pages)
        (docs / page).write_text(json.dumps(nb, ensure_ascii=False), encoding="utf-8")
        shown[source.stem] = "executed" if executed_copy(executed, source) else "as committed"
    nav = [{"Home": "index.md"}, {"Lessons": [{p.stem.replace("_", " "): pages[f"notebooks/{p.name}"]}
                                              for p in lessons]},
           {"Reference": [{title: page} for page, title in REFERENCE.values()]}]
    config = {"site_name": "LoPT kit: prompt tuning, step by step", "docs_dir": "docs",
              "use_directory_urls": False, "strict": True,
              "validation": {"links": {"not_found": "warn", "anchors": "warn", "unrecognized_links": "warn"}},
              "theme": {"name": "material", "font": False, "features": ["navigation.sections", "search.highlight"]},
              "plugins": ["search", {"mkdocs-jupyter": {"execute": False, "include_source": False,
                                                         "custom_mathjax_url": MATHJAX_URL}}],
              "markdown_extensions": ["tables", "admonition", {"toc": {"permalink": False}}],
              "nav": nav}
    (folder / "mkdocs.yml").write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    return shown


def _toc_to_headings(html: str) -> str:
    """Point a notebook page's table of contents at its headings. mkdocs-jupyter makes the contents' anchors
    from the headings' Markdown, where inline code drops out (``2. LoPT-1 step by step: `X = U V` `` gives
    ``#2-lopt-1-step-by-step``), and the headings' ids from their HTML, where it stays (``…-x-u-v``): each anchor
    that names no heading goes to the one heading whose id it begins, else to the one heading whose text, its code
    left out, slugs to it (an anchor that matches neither, or several, is left as it is)."""
    headings = re.findall(r'<h([1-6]) id="([^"]*)"[^>]*>(.*?)</h\1>', html, re.DOTALL)
    ids = [i for _, i, _ in headings]
    by_text: dict[str, list[str]] = {}
    for _, i, text in headings:
        by_text.setdefault(_slug(re.sub(r"<[^>]+>", "", re.sub(r"<code>.*?</code>", "", text, flags=re.DOTALL))),
                           []).append(i)
    toc = list(dict.fromkeys(re.findall(r'<a href="#([^"]*)" class="md-nav__link"', html)))
    fixed = {}
    for anchor in toc:
        if anchor in ids:
            continue
        begins = [i for i in ids if i.startswith(anchor + "-")]
        named = by_text.get(anchor, [])
        if len(begins) == 1:
            fixed[anchor] = begins[0]
        elif len(named) == 1:
            fixed[anchor] = named[0]
    for anchor, heading in fixed.items():
        html = html.replace(f'href="#{anchor}"', f'href="#{heading}"')
    return html


def _slug(text: str) -> str:
    """Python-Markdown's heading anchor (its ``toc`` extension's default slugify) of a heading's plain text."""
    import html as entities
    import unicodedata

    text = unicodedata.normalize("NFKD", entities.unescape(text)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def check_offline(site: Path) -> list[str]:
    """Pages that would load a script, style sheet, frame or picture from another host, by a tag or by an address
    written in an inline script (links to read are fine): ``["page: what"]``, empty when the site is
    self-contained."""
    from html.parser import HTMLParser

    class Loads(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.found, self.inside = [], None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            for name in LOADS.get(tag, ()):
                value = attrs.get(name) or ""
                if tag == "link" and "stylesheet" not in (attrs.get("rel") or "") and "preload" not in (
                        attrs.get("rel") or ""):
                    continue  # a link to read (canonical, alternate), not a load
                if any(REMOTE.match(part) for part in value.split(",")):
                    self.found.append(f"<{tag} {name}={value[:100]}>")
            self.found += [f"style {u[:100]}" for u in CSS_URL.findall(attrs.get("style") or "")]
            self.inside = tag if tag in ("script", "style") and not attrs.get("src") else None

        def handle_endtag(self, tag):
            self.inside = None

        def handle_data(self, data):
            if self.inside == "script":
                self.found += [f"a script asks for {u[:100]}" for u in QUOTED_URL.findall(data)]
            elif self.inside == "style":
                self.found += [f"a style loads {u[:100]}" for u in CSS_URL.findall(data)]

    found = []
    for page in sorted(site.rglob("*.html")):
        parser = Loads()
        parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        found += [f"{page.relative_to(site)}: {what}" for what in parser.found]
    for sheet in sorted(site.rglob("*.css")):
        found += [f"{sheet.relative_to(site)}: loads {u[:100]}"
                  for u in CSS_URL.findall(sheet.read_text(encoding="utf-8", errors="replace"))]
    return found


def _serve_mathjax(site: Path) -> int:
    """Point every page that asks for MathJax at the site's own copy (MathJax 3, configured for ``$…$`` as
    Jupyter writes it); return how many pages."""
    pages = [p for p in site.rglob("*.html") if MATHJAX_TAG.search(p.read_text(encoding="utf-8", errors="replace"))]
    if pages:
        target = site / "assets" / "mathjax"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(mathjax_folder() / MATHJAX_FILE, target / MATHJAX_FILE)
    for page in pages:
        src = os.path.relpath(site / "assets" / "mathjax" / MATHJAX_FILE, page.parent)
        tag = f'{MATHJAX_CONFIG}<script src="{src}"></script>'
        page.write_text(MATHJAX_TAG.sub(lambda _, tag=tag: tag, page.read_text(encoding="utf-8")), encoding="utf-8")
    left = [p.name for p in site.rglob("*.html") if MATHJAX_URL in p.read_text(encoding="utf-8", errors="replace")]
    if left:
        raise BookError(f"MathJax's tag was written in a way the book does not know, on {', '.join(left[:5])}: "
                        f"its formulas would not be typeset")
    return len(pages)


def _replaceable(out: Path) -> None:
    """Refuse to build over a folder that is not a book: the repository or a folder above it, one of its own
    folders, or any non-empty folder without the book's marker."""
    if out == ROOT or out in ROOT.parents or any(out == ROOT / name for name in
                                                 ("docs", "notebooks", "outputs", "lopt_core", "tests", "data")):
        raise BookError(f"{out} is the repository or one of its folders: name a folder of its own, e.g. site/")
    if out.is_file() or (out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file()):
        raise BookError(f"{out} exists and is not a book this kit built (no {MARKER} in it): it is left as it is")


def build(out: str | Path, executed: str | Path | None = None) -> dict:
    """Build the book into ``out`` from the lessons (the executed copies under ``executed`` where present);
    return {"site", "lessons": stem → "executed" or "as committed", "mathjax_pages"}. The site is built beside
    ``out`` and renamed onto it only when the build succeeded; ``out`` must be new, empty or an earlier book."""
    out = Path(out).resolve()
    missing = [name for name in ("notebooks", "docs", "README.md") if not (ROOT / name).exists()]
    if missing:
        raise BookError(f"the book is built from a source checkout (its lessons, docs/ and README.md), and {ROOT} "
                        f"has no {', '.join(missing)}: an installed package holds only the library. Clone the "
                        "repository and run `make book` there")
    _replaceable(out)
    try:
        import mkdocs  # noqa: F401
        import mkdocs_jupyter  # noqa: F401
    except ImportError as err:
        raise BookError("the book's tools are not installed here: pip install -e '.[book]' (or `make book`)") from err
    mathjax_folder()  # before the build, not after it
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".book-", dir=out.parent) as tmp:
        shown = stage(Path(executed).resolve() if executed else None, Path(tmp))
        site = Path(tmp) / "site"
        done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir", str(site)],
                              cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise BookError(f"mkdocs build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        for page in (site / "lessons").glob("*.html"):  # no lesson draws Mermaid: drop the loader nbconvert adds
            html = page.read_text(encoding="utf-8")
            page.write_text(MERMAID.sub("", _toc_to_headings(html)), encoding="utf-8")
        mathjax = _serve_mathjax(site)
        outside = check_offline(site)
        if outside:
            raise BookError("pages would load from the web:\n" + "\n".join(outside[:20]))
        (site / MARKER).write_text("built by python -m lopt_core.lab.book\n", encoding="utf-8")
        old = Path(tmp) / "old"
        if out.exists():
            out.rename(old)  # same folder, same file system: two renames, never a half-written site
        site.rename(out)
    return {"site": str(out), "lessons": shown, "mathjax_pages": mathjax}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executed", default="outputs", help="folder of executed lessons (make demo's outputs)")
    parser.add_argument("--out", default="site", help="the site's folder (replaced)")
    args = parser.parse_args(argv)
    executed = Path(args.executed)
    try:
        result = build(args.out, executed if executed.is_dir() else None)
    except BookError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for stem, how in result["lessons"].items():
        print(f"  {stem}: {how}")
    if "executed" not in result["lessons"].values():
        print(f"note: no executed lesson of the current version in {executed}/: every page shows its lesson "
              f"without outputs (run `make demo` first, or name the folder with --executed)")
    print(f"the book is in {result['site']}/index.html (search: python -m http.server -d {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
