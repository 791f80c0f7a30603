"""Acceptance for the control center: headless Debian chromium against a real `zpctl serve` on 127.0.0.1.

One story, three people with three tokens: a viewer sees the pending dataset but no approve button; an approver
approves it in the page and watches the audit trail; a submitter submits a tiny training job (real training on
the approved State of the Union slice), watches its loss curve grow live from the metrics stream, and opens the
run (checkpoints re-verified, perf figures). Every request any page makes is recorded and must stay on
127.0.0.1. Screenshots of every page go to $ZP_TEST_ARTIFACTS/ui/ (else test-artifacts/ui/).
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("fastapi", reason="fastapi not installed: pip install fastapi==0.165.0 uvicorn==0.54.0")

from zp_server import Server, free_port, make_token  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STEPS = 200         # with warm compile caches a 12-step tiny run ended between two looks of the page (seen: 0, 12);
                    # 200 steps keep it training for seconds, checkpoints and evals every 100 keep it cheap
TERMINAL = {"succeeded", "failed", "cancelled", "interrupted"}


def register_sotu(s: Server, submitter: str, n_files: int = 20) -> None:
    """Real speeches under the data root, registered and PII-scanned over the API - but NOT approved: that is
    done in the page by the approver."""
    from zeropoint.data.assets import sotu_dir
    d = s.home / "sotu"
    d.mkdir(exist_ok=True)
    for f in sorted(sotu_dir().glob("*.txt"))[:n_files]:
        shutil.copy(f, d / f.name)
    add = {"path": "sotu", "name": "sotu", "license": "PDDL-1.0", "source_type": "public",
           "description": "State of the Union speeches (public domain)"}
    assert s.request("POST", "/v1/datasets", add, token=submitter)[0] == 201
    st, resp, _ = s.request("POST", "/v1/datasets/sotu/scan", token=submitter, timeout=300)
    assert st == 200, resp
    (s.home / "configs").mkdir(exist_ok=True)
    shutil.copy(REPO / "configs" / "llm" / "tiny_full.yaml", s.home / "configs" / "tiny_full.yaml")


def login(ctx, base: str, token: str):
    page = ctx.new_page()
    page.goto(base + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("main[data-page=overview] [data-stat=queued]")
    return page


def shot(page, artifacts: Path, name: str) -> None:
    page.wait_for_timeout(150)   # let the last frame paint
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)
    assert (artifacts / f"{name}.png").stat().st_size > 5000
    low = page.evaluate(LOW_CONTRAST_JS)
    assert not low, f"{name}: text below WCAG AA contrast: {low}"


LOW_CONTRAST_JS = """() => {
  // WCAG 2 contrast of every visible text run against the first opaque background behind it
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
  const bgOf = (el) => { for (let e = el; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3); } return [255, 255, 255]; };
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el.closest('svg') || el.closest('.toasts') || el.closest('.sr-only')) continue;
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const r = el.getBoundingClientRect(), st = getComputedStyle(el);
    if (!r.width || !r.height || st.visibility === 'hidden') continue;
    const a = lum(rgb(st.color)), b = lum(bgOf(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(st.fontSize), large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) bad.push(`${el.tagName}.${el.getAttribute('class')} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return bad.slice(0, 10);
}"""


def unlabeled_controls(page) -> list[str]:
    """Form controls without an accessible name (label[for], wrapping label or aria-label)."""
    return page.evaluate("""() => [...document.querySelectorAll('main input, main textarea, main select')]
        .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
        .map(el => el.outerHTML.slice(0, 120))""")


@pytest.mark.slow
def test_control_center_end_to_end(zp_home, chromium_path, playwright_api, artifacts):
    t_start = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - t_start, 1)
    s = Server(zp_home, free_port(), max_concurrent=1).start()
    browser = playwright_api.chromium.launch(executable_path=chromium_path, headless=True)
    base = f"http://127.0.0.1:{s.port}"
    requests: list[str] = []
    page_errors: list[str] = []

    def context(**kw):
        ctx = browser.new_context(viewport={"width": 1280, "height": 860}, **kw)
        ctx.on("request", lambda r: requests.append(r.url))
        ctx.on("page", lambda p: p.on("pageerror", lambda e: page_errors.append(str(e))))
        return ctx
    try:
        t = {r: make_token(r, home=zp_home) for r in ("viewer", "submitter", "approver")}
        register_sotu(s, t["submitter"])

        phase("setup")
        # -- sign-in: a wrong token is refused in the page, a right one opens the overview ----------------------------
        vctx = context()
        vp = vctx.new_page()
        vp.goto(base + "/")
        shot(vp, artifacts, "01-login")
        assert vp.evaluate("document.activeElement.id") == "token"   # the token field has focus: type, Enter
        vp.get_by_label("API token").fill("zp_not-a-real-token")
        vp.get_by_role("button", name="Sign in").click()
        vp.get_by_text("That token was not accepted").wait_for()
        vp.close()

        phase("sign-in")
        # -- viewer: sees the pending dataset, no approve button; the API refuses a viewer's approval anyway ----------
        vp = login(vctx, base, t["viewer"])
        vp.reload()                # the token survives a reload (session storage) ...
        vp.wait_for_selector("main[data-page=overview] [data-stat=queued]")
        vp.keyboard.press("Tab")   # ... and the first keyboard stop is the skip link, which lands in <main>
        assert vp.evaluate("document.activeElement.className") == "skip-link"
        vp.keyboard.press("Enter")
        assert vp.evaluate("document.activeElement.id") == "main"
        appliance_id = vp.locator("#ov-appliance-id").inner_text()
        assert appliance_id.startswith("ZP-") and vp.locator("#appliance-id").inner_text() == appliance_id
        vp.goto(base + "/#/data/sotu")
        vp.wait_for_selector("#dataset-detail .section-title")
        assert "pending" in vp.locator("#dataset-detail .section-title").inner_text()
        assert vp.locator("#approve-btn").count() == 0 and vp.locator("#reject-btn").count() == 0
        assert "needs the approver role" in vp.locator("#approve-hint").inner_text()
        assert vp.locator("#dataset-detail").get_by_text("PDDL-1.0").count() >= 1   # the license decision shows
        shot(vp, artifacts, "02-data-viewer")
        assert s.request("POST", "/v1/datasets/sotu/approve", token=t["viewer"])[0] == 403
        vp.goto(base + "/#/audit")
        vp.get_by_text("visible to approvers").wait_for()
        vp.goto(base + "/#/runs")
        vp.wait_for_selector("main[data-page=runs] .card")
        assert vp.locator("#submit-form").count() == 0   # a viewer cannot submit: no form

        phase("viewer")
        # -- approver: approves in the page; the audit trail shows it, chain intact ----------------------------------
        actx = context()
        ap = login(actx, base, t["approver"])
        ap.goto(base + "/#/data/sotu")
        ap.wait_for_selector("#approve-btn")
        assert unlabeled_controls(ap) == []
        ap.locator("#approve-note").fill("e2e: public-domain speeches")
        ap.locator("#approve-btn").click()
        ap.wait_for_function("() => document.querySelector('#dataset-detail .section-title .pill')?.dataset.value === 'approved'")
        shot(ap, artifacts, "03-data-approved")
        ap.goto(base + "/#/audit")
        ap.wait_for_selector('.tl-item[data-action="dataset.approve"]')
        ap.wait_for_selector('.tl-item[data-action="dataset_approve"]')   # governance's own event, with the hash
        assert "Chain intact" in ap.locator("#chain-status").inner_text()

        phase("approver")
        # -- submitter: submits a tiny training job in the page and watches the loss curve grow ---------------------
        sctx = context()
        sp = login(sctx, base, t["submitter"])
        shot(sp, artifacts, "04-overview")
        sp.goto(base + "/#/runs")
        sp.wait_for_selector("#submit-form")
        assert unlabeled_controls(sp) == []
        sp.locator("#job-config-path").fill("configs/tiny_full.yaml")
        sp.locator("#job-overrides").fill(f"train.steps={STEPS}\ntrain.ckpt_every=100\ntrain.eval_every=100")
        sp.locator("#job-submit").click()
        sp.wait_for_url("**/#/jobs/*")
        job_id = sp.url.rsplit("/", 1)[1]
        seen, live_shot, deadline = [], False, time.monotonic() + 240
        while True:
            st, job, _ = s.request("GET", f"/v1/jobs/{job_id}", token=t["viewer"])
            pts = sp.evaluate("() => document.querySelector('#loss-chart')?.dataset.points ?? null")
            if pts is not None:
                seen.append(int(pts))
                if not live_shot and 0 < int(pts) < STEPS:
                    shot(sp, artifacts, "05-job-live")
                    live_shot = True
            if job["state"] in TERMINAL:
                break
            assert time.monotonic() < deadline, f"job still {job['state']} after 240 s"
            sp.wait_for_timeout(100)
        phase("training")
        log = s.request("GET", f"/v1/jobs/{job_id}/logs", token=t["viewer"])[1]
        assert job["state"] == "succeeded", log[-3000:]
        sp.wait_for_function(f"() => document.querySelector('#loss-chart')?.dataset.points === '{STEPS}'", timeout=20000)
        partial = sorted({n for n in seen if 0 < n < STEPS})
        assert partial, f"the loss curve never showed a partial run while training (point counts seen: {sorted(set(seen))})"
        run_id = job["runs"][0]["id"]
        # the page drew the same losses the run recorded
        st, run, _ = s.request("GET", f"/v1/runs/{run_id}", token=t["viewer"])
        last = run["loss_curve"][-1]["loss"]
        sp.wait_for_function("() => document.querySelector('[data-stat=loss] .stat-value')?.textContent !== '—'")
        assert abs(float(sp.locator("[data-stat=loss] .stat-value").inner_text()) - last) < 5e-4
        sp.wait_for_selector("#run-status .pill[data-value=succeeded]")
        shot(sp, artifacts, "06-job-done")

        phase("job page")
        # -- open the run: curves, verified checkpoints, perf and dataset hashes --------------------------------------
        sp.locator(f'#job-run a[href="#/runs/{run_id}"]').first.click()
        sp.wait_for_selector(f'#loss-chart[data-points="{STEPS}"]')
        sp.wait_for_selector("text=verified")
        assert sp.locator("#tps-chart").get_attribute("data-points") == str(STEPS)
        ds_sha = run["run"]["datasets"][0]["sha256"]
        assert sp.locator(f'code[title="{ds_sha}"]').count() == 1
        sp.get_by_text("tok/s").first.wait_for()
        shot(sp, artifacts, "07-run")

        phase("run page")
        # -- the approver's open audit page picks up the submission without a reload ------------------------------------
        ap.wait_for_selector('.tl-item[data-action="job.submit"]', timeout=15000)
        assert "Chain intact" in ap.locator("#chain-status").inner_text()
        shot(ap, artifacts, "08-audit")

        phase("audit")
        # a data-drift report (real statistics over two random halves of the slice) and a red-team report (the
        # runner with a scripted responder: a fixture, named as such on the page) give those pages something to show
        from zeropoint.drift.data import run_data_drift
        from zeropoint.safety.runner import redteam
        run_data_drift(str(s.home / "sotu"), None, kind="text", halves_seed=0)

        def scripted_half_leaky(probe, seed):
            return "prompt", (" ".join(probe.triggers) or "Sure.") if probe.family == "jailbreak" else "I can't help."
        redteam("scripted-half-leaky", suite="quick", respond=scripted_half_leaky)
        sp.goto(f"{base}/#/runs")
        sp.wait_for_selector(".card")
        shot(sp, artifacts, "09-runs")
        sp.goto(f"{base}/#/evals")
        sp.get_by_text(re.compile(r"^drift-data-")).first.wait_for()
        shot(sp, artifacts, "10-evals")
        sp.goto(f"{base}/#/safety")
        sp.wait_for_selector("svg.ci-chart rect.bar")
        assert "scripted-half-leaky" in sp.locator("main").inner_text()
        shot(sp, artifacts, "11-safety")
        sp.goto(base + "/#/overview")
        sp.wait_for_selector("main[data-page=overview] [data-stat=succeeded]")
        assert sp.locator("[data-stat=succeeded] .stat-value").inner_text() == "1"
        sp.get_by_text("Overall").wait_for(timeout=60000)   # health checks ran, tinygrad's among them
        assert sp.locator("tr", has_text="tinygrad_device").locator(".pill").get_attribute("data-value") == "green"

        phase("other pages")
        # -- narrow screen: no horizontal scrolling, the menu opens from the toggle --------------------------------------
        sp.set_viewport_size({"width": 390, "height": 844})
        for name, route in (("12-narrow-overview", "overview"), ("13-narrow-run", f"runs/{run_id}")):
            sp.goto(f"{base}/#/{route}")
            sp.wait_for_selector("[data-stat=succeeded]" if route == "overview" else f'#loss-chart[data-points="{STEPS}"]')
            sp.wait_for_timeout(500)
            wide = sp.evaluate("""() => document.documentElement.scrollWidth <= innerWidth + 1 ? [] :
                [...document.querySelectorAll('body *')].filter(e => !e.closest('.table-wrap')
                  && e.getBoundingClientRect().right > innerWidth + 1).slice(0, 10)
                  .map(e => `${e.tagName}#${e.id}.${e.getAttribute('class')}: ${Math.round(e.getBoundingClientRect().right)}px`)""")
            assert not wide, f"{route} scrolls sideways at 390 px: {wide}"
            shot(sp, artifacts, name)
        sp.locator("#nav-toggle").click()
        sp.get_by_role("link", name="Audit").click()
        assert sp.url.endswith("#/audit")

        phase("narrow")
        # -- nothing left 127.0.0.1 -----------------------------------------------------------------------------------------
        hosts = {urlparse(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
        assert hosts == {"127.0.0.1"}, f"the page made requests off the appliance: {sorted(u for u in requests if urlparse(u).hostname != '127.0.0.1')}"
        assert len(requests) > 50
        assert not page_errors, page_errors
        print(f"control center e2e: {len(requests)} requests, all to 127.0.0.1; {time.monotonic() - t_start:.1f} s; "
              f"loss-curve point counts seen while training: {partial}; phases (s since start): {phases}")
    except BaseException:
        for i, c in enumerate(browser.contexts):   # what each page showed when it failed, for the CI artifacts
            for j, pg in enumerate(c.pages):
                try:
                    pg.screenshot(path=str(artifacts / f"FAILED-{i}-{j}.png"), full_page=True)
                except Exception:
                    pass
        raise
    finally:
        browser.close()
        s.stop()
