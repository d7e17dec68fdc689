"""The web page of `lookalike serve` in a real browser: Debian's Chromium driven by Playwright.

A server runs in a background thread on a free loopback port, over the demo collection
(sample photos, near-duplicates, a catalogue). Every test keeps a screenshot in
``.pytest-artifacts/browser/`` (``$LOOKALIKE_TEST_ARTIFACTS`` overrides the folder), and fails
on any JavaScript error, any blocked resource (the page's CSP) and any request that leaves the
machine (no CDN).

Chromium: ``/usr/bin/chromium`` (``$LOOKALIKE_CHROMIUM`` overrides), installed by
``./run.sh test`` when missing (``apt-get install chromium``, as root). Without it these tests
are skipped, unless ``$LOOKALIKE_REQUIRE_BROWSER`` is set (CI), where they fail.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import make_images
from test_server_api import TOKEN, demo_collection

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("LOOKALIKE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = (
    Path(
        os.environ.get(
            "LOOKALIKE_TEST_ARTIFACTS", Path(__file__).parent.parent / ".pytest-artifacts"
        )
    )
    / "browser"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):
    """The demo collection served on 127.0.0.1:<free port>; yields paths and the address."""
    import uvicorn

    from lookalike.server import ServerConfig, create_app
    from lookalike.server.serve import address_of, bind

    root = tmp_path_factory.mktemp("site")
    index, photos, queries = demo_collection(root)
    config = ServerConfig(db=index, token=TOKEN, allow_roots=[root], workers=1)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    yield {"url": address_of(sock), "root": root, "photos": photos, "queries": queries}
    server.should_exit = True
    thread.join(timeout=20)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        reason = (
            f"no Chromium at {CHROMIUM}: apt-get install chromium (./run.sh test installs it "
            "when run as root), or set LOOKALIKE_CHROMIUM"
        )
        if os.environ.get("LOOKALIKE_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("LOOKALIKE_REQUIRE_BROWSER"):
            raise
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser, site):
    """A fresh page on the site; on teardown: a screenshot, and no errors or remote requests."""
    phone = "phone" in request.node.name
    options = {"viewport": {"width": 1280, "height": 900}}
    if phone:
        options = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                   "device_scale_factor": 2}  # fmt: skip
    context = browser.new_context(**options)
    problems: list[str] = []
    local = re.compile(r"^(https?://127\.0\.0\.1:\d+/|blob:|data:|about:)")

    def guard(route) -> None:
        if local.match(route.request.url):
            route.continue_()
        else:
            problems.append(f"request leaving the machine: {route.request.url}")
            route.abort()

    context.route("**/*", guard)
    tab = context.new_page()
    tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
           if m.type == "error" and "401" not in m.text else None)  # fmt: skip
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    tab.set_default_timeout(30_000)
    tab.goto(site["url"])
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=not phone)
    context.close()
    assert not problems, problems


def card_paths(page) -> list[str]:
    return page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.path)")


def wait_results(page, status: str = "results") -> None:
    page.wait_for_function(
        "text => document.querySelector('#search-status').textContent.includes(text)"
        " && !document.querySelector('#results').hasAttribute('aria-busy')",
        arg=status,
    )


def test_search_with_the_file_picker(page, site) -> None:
    page.set_input_files("#file-input", str(site["queries"] / "astronaut-crop70.jpg"))
    wait_results(page)
    paths = card_paths(page)
    assert Path(paths[0]).name == "astronaut.jpg"
    assert len(paths) == 20
    first = page.locator("#results .card").first
    assert re.fullmatch(r"0\.\d{3}|1\.000", first.locator(".score").inner_text())
    assert "category: people" in first.locator(".chips").inner_text()
    # the thumbnails are real images, served by id
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .card img')].slice(0, 5)"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    assert page.locator("#query-preview").is_visible()


def test_more_like_this(page, site) -> None:
    page.set_input_files("#file-input", str(site["photos"] / "moon.jpg"))
    wait_results(page)
    paths = card_paths(page)
    assert [Path(p).name for p in paths[:2]] == ["moon.jpg", "moon-small.jpg"]
    page.locator("#results .card").nth(1).locator("button.more").click()
    page.wait_for_function(
        "() => document.querySelector('#query-label').textContent === 'more like moon-small.jpg'"
    )
    wait_results(page)
    first = page.locator("#results .card").first
    assert Path(first.get_attribute("data-path")).name == "moon-small.jpg"
    assert "self" in first.get_attribute("class")
    assert Path(card_paths(page)[1]).name == "moon.jpg"
    # the big view, and "more like this" from it
    page.locator("#results .card").nth(1).locator(".thumb").click()
    page.wait_for_function("() => document.querySelector('#viewer').open")
    page.wait_for_function("() => document.querySelector('#viewer-path').textContent.length > 0")
    assert page.locator("#viewer-path").inner_text().endswith("moon.jpg")
    assert "science" in page.locator("#viewer-meta").inner_text()
    page.wait_for_function("() => document.querySelector('#viewer-img').naturalWidth > 0")
    page.click("#viewer-more")
    page.wait_for_function(
        "() => document.querySelector('#query-label').textContent === 'more like moon.jpg'"
    )


def first_result_is(page, name: str) -> None:
    page.wait_for_function(
        "name => (document.querySelector('#results .card') || {dataset: {}})"
        ".dataset.path?.endsWith('/' + name)",
        arg=name,
    )


def set_weight(page, value: str) -> None:
    page.eval_on_selector(
        "#weight", "(w, v) => { w.value = v; w.dispatchEvent(new Event('change')); }", value
    )


def test_text_search_box(page, site) -> None:
    from lookalike.text.scoring import default_text_model

    # the server warms the text model up in the background at start; in a fresh cache that
    # takes a while on a busy machine, which is not what this test measures: wait for it here
    default_text_model().prepare()
    page.fill("#text-query", "a cup of espresso")
    page.click("#text-run")
    wait_results(page)
    assert Path(card_paths(page)[0]).name == "coffee.jpg"
    assert "Read as: espresso" in page.inner_text("#text-read")
    assert page.locator("#weight-field").is_hidden()  # no image to weigh the words against
    # words that name nothing: said so, beside the (low-scored) results
    page.fill("#text-query", "quantum entanglement")
    page.press("#text-query", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#text-read').textContent.includes('No concept matched')"
    )
    assert "warn" in page.get_attribute("#text-read", "class")
    # words with an image: the weight decides which one leads
    page.fill("#text-query", "cat")
    page.set_input_files("#file-input", str(site["photos"] / "coffee.jpg"))
    wait_results(page)
    assert page.locator("#weight-field").is_visible()
    set_weight(page, "1")
    first_result_is(page, "chelsea.jpg")
    set_weight(page, "0")
    first_result_is(page, "coffee.jpg")
    # removing the image leaves a search by words alone
    page.click("#query-clear")
    first_result_is(page, "chelsea.jpg")
    assert page.locator("#query-preview").is_hidden()


def test_metadata_and_folder_filters(page, site) -> None:
    page.set_input_files("#file-input", str(site["queries"] / "coffee-half_size.jpg"))
    wait_results(page)
    assert Path(card_paths(page)[0]).name == "coffee.jpg"
    page.select_option("#meta-filters select[data-key=category]", "science")
    page.click("#apply-filters")
    wait_results(page, "(filtered)")
    chips = page.locator("#results .card .chips").all_inner_texts()
    assert len(chips) == 6  # hubble, immunohistochemistry, moon, moon-small, retina, cell
    assert all("category: science" in c for c in chips)
    # a price range on top
    page.fill("#meta-filters input[data-key=price][data-op=lte]", "100")
    page.click("#apply-filters")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 3")
    prices = [int(re.search(r"price: (\d+)", c)[1])
              for c in page.locator("#results .card .chips").all_inner_texts()]  # fmt: skip
    assert all(p <= 100 for p in prices)
    # clearing brings everything back; a folder without photos gives nothing
    page.click("#clear-filters")
    wait_results(page, "20 results")
    page.select_option("#folder", str(site["photos"]))
    wait_results(page, "(filtered)")
    assert len(card_paths(page)) == 20


def test_duplicates_view(page) -> None:
    page.click("#tabbtn-dups")
    page.click("#dups-run")
    page.wait_for_selector("#dups .group")
    groups = page.locator("#dups .group")
    assert groups.count() == 2
    members = "g => [...g.querySelectorAll('.card')].map(c => c.dataset.path)"
    names = sorted(sorted(Path(p).name for p in g.evaluate(members)) for g in groups.all())
    assert names == [["horse-copy.jpg", "horse.jpg"], ["moon-small.jpg", "moon.jpg"]]
    assert page.locator("#dups .tag-keep").count() == 2
    assert "2 groups" in page.inner_text("#dups-status")
    page.select_option("#dups-preset", "exact")
    page.click("#dups-run")
    page.wait_for_function("() => document.querySelector('#dups-status').textContent"
                           ".includes('No duplicates')")  # fmt: skip


def test_copy_check(page, site) -> None:
    page.click("#tabbtn-check")
    page.set_input_files("#check-input", str(site["queries"] / "rocket-jpeg10.jpg"))
    page.wait_for_selector("#check-verdict")
    verdict = page.inner_text("#check-verdict")
    assert verdict.startswith("Copy of") and "rocket.jpg" in verdict
    evidence = page.inner_text("#check-evidence")
    inliers = int(re.search(r"matching points \(inliers\)\s+(\d+)", evidence)[1])
    assert inliers >= 12
    page.set_input_files("#check-input", str(make_images(site["root"] / "fresh", 1, seed=77)[0]))
    page.wait_for_function(
        "() => (document.querySelector('#check-verdict') || {}).textContent?.startsWith('No copy')"
    )


def test_paste_and_drop(page, site) -> None:
    data = base64.b64encode((site["queries"] / "chelsea-hflip.jpg").read_bytes()).decode()
    make_file = f"""
        const bytes = Uint8Array.from(atob("{data}"), c => c.charCodeAt(0));
        const file = new File([bytes], "clip.jpg", {{type: "image/jpeg"}});
        const dt = new DataTransfer(); dt.items.add(file);
    """
    page.evaluate(make_file + "document.dispatchEvent(new ClipboardEvent('paste', "
                  "{clipboardData: dt, bubbles: true}));")  # fmt: skip
    wait_results(page)
    assert Path(card_paths(page)[0]).name == "chelsea.jpg"
    assert page.inner_text("#query-label") == "clip.jpg"
    page.evaluate("document.querySelector('#results').replaceChildren()")
    page.evaluate(make_file + "document.querySelector('#drop').dispatchEvent(new DragEvent("
                  "'drop', {dataTransfer: dt, bubbles: true, cancelable: true}));")  # fmt: skip
    wait_results(page)
    assert Path(card_paths(page)[0]).name == "chelsea.jpg"


def test_add_with_progress_then_delete(page, site) -> None:
    new = make_images(site["root"] / "to-upload", 3, seed=78, size=300)
    page.click("#tabbtn-add")
    assert page.locator("#add-token-note").is_visible()
    page.set_input_files("#add-input", [str(p) for p in new])
    page.fill("#add-meta", '{"category": "uploaded", "price": 1}')
    page.click("#add-upload")  # no token yet: the token dialog opens
    page.wait_for_function("() => document.querySelector('#settings').open")
    page.fill("#token-input", TOKEN)
    page.click("#token-save")
    page.wait_for_function("() => document.querySelector('#add-token-note').hidden")
    page.click("#add-upload")
    page.wait_for_function(
        "() => document.querySelector('#add-status').textContent.startsWith('Done')"
    )
    assert page.evaluate("document.querySelector('#add-progress div').style.width") == "100%"
    assert "3 new" in page.inner_text("#add-status")
    assert "done" in page.inner_text("#jobs")

    page.click("#tabbtn-search")
    page.set_input_files("#file-input", str(new[1]))
    wait_results(page)
    first = page.locator("#results .card").first
    assert first.get_attribute("data-path").endswith("gen_78_0001.jpg")
    assert "category: uploaded" in first.inner_text()
    image_id = first.get_attribute("data-id")
    page.once("dialog", lambda d: d.accept())
    first.locator(".thumb").click()
    page.wait_for_function("() => document.querySelector('#viewer-path').textContent.length > 0")
    page.click("#viewer-delete")
    page.wait_for_function(f"() => !document.querySelector('.card[data-id=\"{image_id}\"]')")
    assert "Removed" in page.inner_text("#toast")
    page.click("#apply-filters")  # search again: gone from the results
    wait_results(page)
    ids = page.eval_on_selector_all("#results .card", "cs => cs.map(c => c.dataset.id)")
    assert image_id not in ids


def test_wrong_token_asks_again(page, site) -> None:
    page.evaluate(f"localStorage.setItem('lookalike.token', 'not-{TOKEN}')")
    page.set_input_files("#file-input", str(site["photos"] / "brick.jpg"))
    wait_results(page)
    page.once("dialog", lambda d: d.accept())
    page.locator("#results .card").first.locator(".thumb").click()
    page.wait_for_function("() => document.querySelector('#viewer-path').textContent.length > 0")
    page.click("#viewer-delete")
    page.wait_for_function("() => document.querySelector('#settings').open")
    assert "token" in page.inner_text("#settings-msg")


def test_api_docs_work_offline(page, site) -> None:
    page.goto(site["url"] + "docs")
    page.wait_for_selector(".swagger-ui .opblock")
    text = page.inner_text(".swagger-ui")
    assert "/api/search" in text and "/api/images/{image_id}" in text


def test_phone_sized_screen(page, site) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert not page.evaluate("document.querySelector('details.filters').open")
    page.set_input_files("#file-input", str(site["queries"] / "retina-crop80_jpeg50.jpg"))
    wait_results(page)
    assert Path(card_paths(page)[0]).name == "retina.jpg"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator("#results .card").first.bounding_box()
    assert box["width"] >= 140 and box["x"] + box["width"] <= 390
    page.click("#tabbtn-dups")
    page.click("#dups-run")
    page.wait_for_selector("#dups .group")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_dups_html_report_works_offline(browser, site, tmp_path: Path) -> None:
    """`lookalike dups --html`: one self-contained file; its thumbnails show with no server."""
    import lookalike
    from lookalike.dups import find_duplicates, write_html_report

    with lookalike.open(site["root"] / "index") as col:
        groups = find_duplicates(col, "near")
    report = write_html_report(groups, tmp_path / "report.html")
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    tab = context.new_page()
    tab.goto(report.as_uri())
    tab.wait_for_function(
        "() => [...document.images].length > 0 && [...document.images]"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    assert tab.locator(".group").count() == len(groups) == 2
    assert tab.locator(".keep").count() == 2 and "remove?" in tab.inner_text("body").lower()
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / "test_dups_html_report_works_offline.png"), full_page=True)
    context.close()
