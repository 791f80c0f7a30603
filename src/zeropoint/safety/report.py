"""Red-team report files under `redteam/<id>/`, written atomically:

- `report.jsonl`: garak's entry types -- `start_run setup` (settings), `init`, one `attempt` per probe
  (status 2: outputs and `detector_results`), one `eval` per probe x detector (passed / fails / total and
  the bootstrap interval), a `digest` (ASR per family and detector) and `completion`.
- `summary.json` (the digest plus gate and timing), `summary.md` and `summary.html` for people.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from .. import __version__
from ..workspace import atomic_write_text


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _ci(s: dict) -> str:
    return "n/a" if s.get("ci_low") is None else f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def report_rows(meta: dict, attempts, summary: dict) -> list[dict]:
    rows = [{"entry_type": "start_run setup", **{f"run.{k}": v for k, v in meta["settings"].items()}},
            {"entry_type": "init", "zeropoint_version": __version__, "start_time": meta["started_at"],
             "run": meta["id"]}]
    for a in attempts:
        p = a.probe
        rows.append({
            "entry_type": "attempt", "uuid": a.uuid, "seq": a.seq, "status": 2, "probe_classname": p.id,
            "family": p.family, "goal": p.goal, "probe_params": {k: v for k, v in p.meta.items() if k != "secret"},
            "prompt": {"raw": p.raw} if p.raw is not None else {"turns": list(p.messages)},
            "rendered_prompt": a.prompt, "outputs": a.outputs, "seeds": a.seeds, "gen_ms": a.gen_ms,
            "detector_results": a.scores, "triggers": list(p.triggers),
        })
    for e in summary["evals"]:
        rows.append({"entry_type": "eval", "probe": e["probe"], "detector": e["detector"], "passed": e["passes"],
                     "fails": e["fails"], "total_evaluated": e["total"], "asr": e["asr"], "confidence": "0.95",
                     "confidence_lower": e["ci_low"], "confidence_upper": e["ci_high"]})
    rows.append({"entry_type": "digest", "families": summary["families"], "overall": summary["overall"],
                 "gate": meta.get("gate")})
    rows.append({"entry_type": "completion", "end_time": meta["ended_at"], "run": meta["id"],
                 "wall_s": meta.get("wall_s")})
    return rows


def markdown(meta: dict, summary: dict, attempts) -> str:
    st = meta["settings"]
    lines = [f"# Red-team report {meta['id']}", "",
             f"- model: `{st['model']}`  suite: `{st['suite']}`  generations: {st['generations']}  "
             f"max_tokens: {st['max_tokens']}  temperature: {st['temperature']}  top_p: {st['top_p']}  seed: {st['seed']}",
             f"- device: {meta.get('device')}  wall time: {meta.get('wall_s')} s  attempts: {len(attempts)}  "
             f"outputs: {summary['overall']['total']}",
             f"- an output fails when a detector scores >= {summary['fail_at']}; ASR = fails / (passes + fails); "
             "95% CI: percentile bootstrap over probes (2000 resamples)", ""]
    if meta.get("simulated"):
        lines.insert(1, "**SIMULATED RUN - NOT REAL COMPUTE**\n")
    lines += ["## Attack success rate per family", "", "| family | probes | outputs | fails | ASR | 95% CI | threshold | gate |",
              "|---|---|---|---|---|---|---|---|"]
    gate = meta.get("gate") or {}
    per = {r["family"]: r for r in gate.get("families", [])}
    for f, s in summary["families"].items():
        g = per.get(f, {})
        lines.append(f"| {f} | {s['probes']} | {s['total']} | {s['fails']} | {_fmt(s['asr'])} | {_ci(s)} | "
                     f"{_fmt(g.get('threshold'))} | {g.get('verdict', '-')} |")
    o = summary["overall"]
    lines += [f"| **all** | {o['probes']} | {o['total']} | {o['fails']} | {_fmt(o['asr'])} | {_ci(o)} | | |", "",
              "## Per family and detector", "", "| family | detector | outputs | fails | ASR | 95% CI |", "|---|---|---|---|---|---|"]
    for f, s in summary["families"].items():
        for d, ds in s["detectors"].items():
            lines.append(f"| {f} | {d} | {ds['total']} | {ds['fails']} | {_fmt(ds['asr'])} | {_ci(ds)} |")
    if gate:
        lines += ["", f"## Gate: {'PASSED' if gate.get('passed') else 'FAILED'}", "",
                  f"thresholds from {gate.get('source')}"]
    lines += ["", "## Failing outputs (first 20)", ""]
    n = 0
    for a in attempts:
        for i, (out, bad) in enumerate(zip(a.outputs, a.failed_outputs())):
            if bad and n < 20:
                n += 1
                scores = ", ".join(f"{d}={ss[i]:.2f}" for d, ss in a.scores.items())
                lines.append(f"- `{a.probe.id}` ({scores}): {json.dumps(out[:200])}")
    if n == 0:
        lines.append("none")
    return "\n".join(lines) + "\n"


def html_page(md_meta: dict, summary: dict, attempts) -> str:
    """A self-contained HTML page (no scripts, no external assets) with the same tables as the Markdown."""
    st = md_meta["settings"]
    gate = md_meta.get("gate") or {}
    per = {r["family"]: r for r in gate.get("families", [])}
    e = html.escape
    rows = "".join(
        f"<tr class='{'bad' if per.get(f, {}).get('verdict') == 'FAIL' else ''}'><td>{e(f)}</td><td>{s['probes']}</td>"
        f"<td>{s['total']}</td><td>{s['fails']}</td><td>{_fmt(s['asr'])}</td><td>{_ci(s)}</td>"
        f"<td>{_fmt(per.get(f, {}).get('threshold'))}</td><td>{e(per.get(f, {}).get('verdict', '-'))}</td></tr>"
        for f, s in summary["families"].items())
    drows = "".join(f"<tr><td>{e(f)}</td><td>{e(d)}</td><td>{ds['total']}</td><td>{ds['fails']}</td>"
                    f"<td>{_fmt(ds['asr'])}</td><td>{_ci(ds)}</td></tr>"
                    for f, s in summary["families"].items() for d, ds in s["detectors"].items())
    arows = "".join(f"<tr><td>{e(a.probe.id)}</td><td>{i}</td><td>{'FAIL' if bad else 'pass'}</td>"
                    f"<td>{e(', '.join(f'{d}={ss[i]:.2f}' for d, ss in a.scores.items()))}</td>"
                    f"<td><pre>{e(out[:400])}</pre></td></tr>"
                    for a in attempts for i, (out, bad) in enumerate(zip(a.outputs, a.failed_outputs())))
    banner = "<p class='sim'>SIMULATED RUN - NOT REAL COMPUTE</p>" if md_meta.get("simulated") else ""
    gate_line = (f"<h2>Gate: {'PASSED' if gate.get('passed') else 'FAILED'}</h2><p>thresholds from "
                 f"{e(str(gate.get('source')))}</p>") if gate else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Red-team {e(md_meta['id'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;
padding:4px 8px;vertical-align:top}}tr.bad{{background:#fdd}}pre{{white-space:pre-wrap;margin:0;max-width:60em}}
.sim{{background:#c00;color:#fff;padding:.5em;font-weight:bold}}</style></head><body>
<h1>Red-team report {e(md_meta['id'])}</h1>{banner}
<p>model <code>{e(str(st['model']))}</code>, suite <code>{e(str(st['suite']))}</code>, {st['generations']} generation(s),
max_tokens {st['max_tokens']}, temperature {st['temperature']}, seed {st['seed']}; device {e(str(md_meta.get('device')))};
wall time {md_meta.get('wall_s')} s. An output fails when a detector scores &ge; {summary['fail_at']}.
ASR = fails / (passes + fails), 95% CI by percentile bootstrap over probes.</p>
<h2>ASR per family</h2><table><tr><th>family</th><th>probes</th><th>outputs</th><th>fails</th><th>ASR</th><th>95% CI</th>
<th>threshold</th><th>gate</th></tr>{rows}</table>{gate_line}
<h2>Per family and detector</h2><table><tr><th>family</th><th>detector</th><th>outputs</th><th>fails</th><th>ASR</th>
<th>95% CI</th></tr>{drows}</table>
<h2>Outputs</h2><table><tr><th>probe</th><th>gen</th><th>result</th><th>scores</th><th>output</th></tr>{arows}</table>
</body></html>
"""


def write_report(out_dir: Path, meta: dict, attempts, summary: dict) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / "report.jsonl", "summary_json": out_dir / "summary.json",
             "summary_md": out_dir / "summary.md", "summary_html": out_dir / "summary.html"}
    atomic_write_text(paths["report"], "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n"
                                               for r in report_rows(meta, attempts, summary)))
    atomic_write_text(paths["summary_json"], json.dumps({**meta, "summary": summary}, indent=2, default=str) + "\n")
    atomic_write_text(paths["summary_md"], markdown(meta, summary, attempts))
    atomic_write_text(paths["summary_html"], html_page(meta, summary, attempts))
    return paths
