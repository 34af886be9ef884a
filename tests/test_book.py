"""The rendered book, as a reader meets it: built offline from the lessons the notebook tests executed (they run
first; a lesson they did not execute here appears as committed, and lesson 00 is executed if none was), then read
in headless Chromium served from 127.0.0.1, with every request that would leave the machine refused and counted."""
import functools
import http.server
import re
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, free_port

from lopt_core.lab import book as lab_book
from lopt_core.lab.notebooks import execute_notebook, list_notebooks

pytestmark = [pytest.mark.book, pytest.mark.slow]

LESSONS = [p.stem for p in list_notebooks()]


@pytest.fixture(scope="module")
def built(executed_lessons, tmp_path_factory):
    pytest.importorskip("mkdocs", reason="the book needs mkdocs: pip install -e '.[book]' (make book, make test)")
    pytest.importorskip("mkdocs_jupyter", reason="the book needs mkdocs-jupyter: pip install -e '.[book]'")
    try:
        lab_book.mathjax_folder()
    except lab_book.BookError as err:
        pytest.skip(str(err))
    if not any(lab_book.executed_copy(executed_lessons, p) for p in list_notebooks()):
        execute_notebook(list_notebooks(["00"])[0], executed_lessons, profile="ci")  # run alone: one lesson
    site = tmp_path_factory.mktemp("book") / "site"
    return lab_book.build(site, executed_lessons), Path(site)


class Anchors(HTMLParser):
    """The links (``a href``) and element ids of one page."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


@functools.cache
def parse(path: Path) -> Anchors:
    parser = Anchors()
    parser.feed(path.read_text(errors="replace"))
    return parser


def test_the_book_holds_every_lesson_and_reference_page_offline(built):
    result, site = built
    assert list(result["lessons"]) == LESSONS
    assert "executed" in result["lessons"].values()
    for stem, how in result["lessons"].items():
        page = (site / "lessons" / f"{stem}.html").read_text()
        assert ("shows a run of the lesson" in page) == (how == "executed"), stem
    for page in ["index", *(name.removesuffix(".md") for name, _ in lab_book.REFERENCE.values())]:
        assert (site / f"{page}.html").stat().st_size > 10_000, page
    assert lab_book.check_offline(site) == []
    assert result["mathjax_pages"] >= 2  # 06 and 08 write formulas; MathJax comes from the site itself
    assert (site / "assets" / "mathjax" / lab_book.MATHJAX_FILE).stat().st_size > 1_000_000


def test_no_internal_link_is_broken(built):
    _, site = built
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")  # 404's links are from the server root
    checked, broken = 0, []
    for page in pages:
        for href in parse(page).links:
            url = urlparse(href)
            if url.scheme or url.netloc or href.startswith(("mailto:", "javascript:")):
                continue
            target = page if not url.path else (page.parent / unquote(url.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: {href} (no such page)")
            elif url.fragment and target.suffix == ".html" and unquote(url.fragment) not in parse(target).ids:
                broken.append(f"{page.relative_to(site)}: {href} (no element with that id)")
    assert checked > 100
    assert not broken, "\n".join(broken[:30])


@pytest.fixture(scope="module")
def served(built):
    _, site = built
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", built
    server.shutdown()


@pytest.fixture(scope="module")
def browser_page(served):
    if not CHROMIUM:
        pytest.skip("no Chromium: install Debian's chromium (.ci/run does) or set LOPT_CHROMIUM to its path")
    pytest.importorskip("playwright", reason="the browser test needs playwright (pip install -e .[browser])")
    from playwright.sync_api import sync_playwright

    url, _ = served
    outside = []

    def route(request_route):
        if urlparse(request_route.request.url).hostname in ("127.0.0.1", None):
            request_route.continue_()
        else:
            outside.append(request_route.request.url)
            request_route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.route("**/*", route)
        try:
            yield page, url, outside
        finally:
            browser.close()


@pytest.mark.browser
def test_every_lesson_page_loads_with_its_figures(browser_page, built):
    page, url, outside = browser_page
    result, _ = built
    for stem in LESSONS:
        response = page.goto(urljoin(url, f"lessons/{stem}.html"))
        assert response.status == 200, stem
        page.wait_for_load_state("load")
        number = stem[:2]
        assert page.locator("h1").first.inner_text().startswith(number), stem
        sizes = page.eval_on_selector_all(".jupyter-wrapper img, article img",
                                          "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
        assert all(done and w > 0 and h > 0 for done, w, h in sizes), (stem, sizes)
        if result["lessons"][stem] == "executed":
            assert len(sizes) >= 1, f"{stem}: executed, yet no figure on its page"
        if stem.startswith(("06", "08")):  # formulas typeset by the site's own MathJax, without an error
            page.wait_for_selector("mjx-container", timeout=30_000)
            assert page.locator("mjx-merror").count() == 0, stem
    assert outside == [], f"pages asked the web for: {outside[:5]}"


@pytest.mark.browser
def test_search_finds_effective_rank(browser_page):
    page, url, outside = browser_page
    page.goto(url)
    page.locator("label.md-search__icon, .md-search__input").first.click()  # the search box opens
    # the index loads in a web worker; a reader types once it is ready ("Initializing search" gone), key by key:
    # the search answers key events, and a value set at once (fill) went unanswered once the index was ready first
    page.wait_for_function("() => !document.querySelector('.md-search-result__meta')"
                           ".textContent.includes('Initializing')", timeout=60_000)
    page.locator("input.md-search__input").press_sequentially("effective rank", delay=20)
    results = page.locator(".md-search-result__item")
    results.first.wait_for(state="visible", timeout=30_000)
    text = " ".join(results.all_inner_texts()).lower()
    assert re.search(r"effective\s+rank", text), text[:500]
    assert outside == []
