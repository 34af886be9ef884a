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
    "docs/usage.md": ("usage.md", "Using the kit"),
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
EXTERNAL = re.compile(r'<(script|img|link|iframe|source)\b[^>]*\b(src|href)="(https?:)?//[^"]*"', re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.IGNORECASE | re.DOTALL)
QUOTED_URL = re.compile(r"""["'](?:https?:)?//(?!www\.w3\.org/)[^"'\s]+["']""")  # w3.org: names, not loads
MERMAID = re.compile(r"<script type=\"module\">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*</script>", re.DOTALL)
PROGRESS = re.compile(r"\d+%\|")  # tqdm's text: "name:  40%|####      | 8/20 [...]"
LINK = re.compile(r"(!?\[[^\]]*\])\(([^)\s]+)\)")


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


def executed_copy(executed: Path | None, lesson: Path) -> Path | None:
    """The executed copy of ``lesson`` under ``executed`` (``<executed>/<stem>/<stem>.ipynb``), if there is one."""
    if executed is None:
        return None
    found = Path(executed) / lesson.stem / lesson.name
    return found if found.is_file() else None


def _relink(text: str, source: Path, page: str, pages: dict[str, str], html: bool = False) -> str:
    """Rewrite the relative links of ``text`` (written at ``source`` in the repository) for the book page
    ``page``: a link to a file the book holds points at its page; a link to anything else the book lacks is
    left as plain text (the book has no page for it) and so is never broken. ``html``: name pages by their
    ``.html`` file (in a notebook's cells, which MkDocs does not rewrite; it does in Markdown pages)."""
    def fix(match: re.Match) -> str:
        label, target = match.groups()
        if re.match(r"[a-z]+:|#", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = os.path.normpath(os.path.join(os.path.dirname(source.relative_to(ROOT).as_posix()), path))
        if repo_path not in pages:
            return label[1:-1] if not label.startswith("!") else match.group(0)
        new = os.path.relpath(pages[repo_path], os.path.dirname(page) or ".")
        if html and new.endswith((".md", ".ipynb")):
            new = new.rsplit(".", 1)[0] + ".html"
        return f"{label}({new}{'#' + anchor if anchor else ''})"
    return LINK.sub(fix, text)


def _lesson(source: Path, executed: Path | None, page: str, pages: dict[str, str]) -> dict:
    """The notebook the book shows for one lesson: links rewritten to the book's pages, widget outputs
    replaced by a sentence (their state is not saved in a run), and a first note that says which run it shows."""
    copy = executed_copy(executed, source)
    nb = json.loads((copy or source).read_text())
    run = nb.get("metadata", {}).get("papermill", {})
    profile = run.get("parameters", {}).get("profile")
    if copy is not None:
        when = (run.get("end_time") or "")[:10]
        note = (f"*This page shows a run of the lesson with profile `{profile}`{' on ' + when if when else ''}: "
                f"the outputs are that run's. Run it yourself in JupyterLab (`make lab`) to change it.*")
    else:
        note = (f"*This page shows the lesson as committed, without outputs: no executed copy was there when the "
                f"book was built. `make demo NOTEBOOKS={source.name[:2]}` runs it, then `make book` shows it here.*")
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
    for extra in sorted((ROOT / "docs").iterdir()):  # pictures the pages show
        if extra.suffix != ".md":
            pages[f"docs/{extra.name}"] = extra.name
            shutil.copy2(extra, docs / extra.name)
    for repo_path, page in pages.items():
        source = ROOT / repo_path
        if source.suffix == ".md":
            (docs / page).write_text(_relink(source.read_text(), source, page, pages))
    shown = {}
    (docs / "lessons").mkdir()
    for source in lessons:
        page = pages[f"notebooks/{source.name}"]
        nb = _lesson(source, executed, page, pages)
        (docs / page).write_text(json.dumps(nb, ensure_ascii=False))
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
    (folder / "mkdocs.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    return shown


def _toc_to_headings(html: str) -> str:
    """Point a notebook page's table of contents at its headings. mkdocs-jupyter makes the contents' anchors
    from the headings' Markdown, where inline code drops out (``2. LoPT-1 step by step: `X = U V` `` gives
    ``#2-lopt-1-step-by-step``), and the headings' ids from their HTML, where it stays (``…-x-u-v``): each anchor
    that names no heading goes to the one heading whose id it begins, else to the heading at its place in order."""
    ids = re.findall(r'<h[1-6] id="([^"]*)"', html)
    toc = list(dict.fromkeys(re.findall(r'<a href="#([^"]*)" class="md-nav__link"', html)))
    fixed = {}
    for place, anchor in enumerate(toc):
        if anchor in ids:
            continue
        begins = [i for i in ids if i.startswith(anchor + "-")]
        if len(begins) == 1:
            fixed[anchor] = begins[0]
        elif len(toc) == len(ids) - 1:  # the contents list every heading but the title
            fixed[anchor] = ids[place + 1]
    for anchor, heading in fixed.items():
        html = html.replace(f'href="#{anchor}"', f'href="#{heading}"')
    return html


def check_offline(site: Path) -> list[str]:
    """Pages that would load a script, style sheet, frame or picture from another host, by a tag or by an address
    written in an inline script (links to read are fine): ``["page: what"]``, empty when the site is
    self-contained."""
    found = []
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(errors="replace")
        found += [f"{page.relative_to(site)}: {m.group(0)[:120]}" for m in EXTERNAL.finditer(html)]
        found += [f"{page.relative_to(site)}: a script asks for {url[:120]}" for script in INLINE_SCRIPT.findall(html)
                  for url in QUOTED_URL.findall(script)]
    return found


def _serve_mathjax(site: Path) -> int:
    """Point every page that asks for MathJax at the site's own copy (MathJax 3, configured for ``$…$`` as
    Jupyter writes it); return how many pages."""
    pages = [p for p in site.rglob("*.html") if MATHJAX_TAG.search(p.read_text(errors="replace"))]
    if pages:
        target = site / "assets" / "mathjax"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(mathjax_folder() / MATHJAX_FILE, target / MATHJAX_FILE)
    for page in pages:
        src = os.path.relpath(site / "assets" / "mathjax" / MATHJAX_FILE, page.parent)
        tag = f'{MATHJAX_CONFIG}<script src="{src}"></script>'
        page.write_text(MATHJAX_TAG.sub(lambda _, tag=tag: tag, page.read_text()))
    return len(pages)


def build(out: str | Path, executed: str | Path | None = None) -> dict:
    """Build the book into ``out`` from the lessons (the executed copies under ``executed`` where present);
    return {"site", "lessons": stem → "executed" or "as committed", "mathjax_pages"}. The folder is replaced
    only when the build succeeded."""
    out = Path(out).resolve()
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        raise BookError("mkdocs is not installed here: pip install -e '.[book]' (or `make book`)")
    with tempfile.TemporaryDirectory(prefix="book-") as tmp:
        shown = stage(Path(executed).resolve() if executed else None, Path(tmp))
        site = Path(tmp) / "site"
        done = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--quiet", "--site-dir",
                               str(site)], cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            raise BookError(f"mkdocs build failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        for page in (site / "lessons").glob("*.html"):  # no lesson draws Mermaid: drop the loader nbconvert adds
            page.write_text(MERMAID.sub("", _toc_to_headings(page.read_text())))
        mathjax = _serve_mathjax(site)
        outside = check_offline(site)
        if outside:
            raise BookError("pages would load from the web:\n" + "\n".join(outside[:20]))
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(site), out)
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
    print(f"the book is in {result['site']}/index.html (search: python -m http.server -d {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
