"""PII scan throughput on the SpamAssassin corpus: Zeropoint's scanner vs Microsoft Presidio, offline.

    PYTHONPATH=src python bench/pii_scan.py [--presidio-messages 300] [--all-recognizers] [--json]

Presidio is a bench-only dependency (`pip install presidio-analyzer spacy`; never imported by src/). It runs
offline per the issue's recipe: a blank spaCy English pipeline stands in for the NER model, the spaCy NER
recognizer is dropped (only Presidio's pattern/regex recognizers remain), and tldextract gets an empty
suffix-list URL list (it then uses its bundled snapshot instead of downloading).

Presidio is ~100x slower, so it scans the first N messages (sorted paths; --presidio-messages); Zeropoint
scans the same N messages (the like-for-like ratio) and the whole corpus. Both tools' counts per type are
printed for the same messages. By default Presidio runs only the recognizers for entity types both tools
have (fair to Presidio: fewer recognizers is faster); --all-recognizers runs every predefined one.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from zeropoint.data.assets import spam_assassin_dir  # noqa: E402
from zeropoint.governance import pii  # noqa: E402

# Presidio entity -> ours (IP_ADDRESS covers both IPv4 and IPv6)
PRESIDIO_MAP = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD", "US_SSN": "US_SSN",
                "IBAN_CODE": "IBAN", "IP_ADDRESS": "IP (v4+v6)"}


def presidio_analyzer():
    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    # offline: the bundled public-suffix snapshot instead of a download, no cache directory
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class BlankSpacyEngine(SpacyNlpEngine):
        def __init__(self):
            super().__init__(models=[{"lang_code": "en", "model_name": "blank:en"}])

        def load(self):
            self.nlp = {"en": spacy.blank("en")}

    engine = BlankSpacyEngine()
    engine.load()
    reg = RecognizerRegistry()
    reg.load_predefined_recognizers(nlp_engine=engine)
    reg.remove_recognizer("SpacyRecognizer")
    return AnalyzerEngine(nlp_engine=engine, registry=reg, supported_languages=["en"])


def presidio_on_labelled(an) -> dict:
    """Presidio's precision/recall on our labelled set, for the types both tools cover (span-overlap match)."""
    labelled = Path(__file__).resolve().parents[1] / "tests" / "governance" / "data" / "pii_labelled.jsonl"
    tp, fp, fn = Counter(), Counter(), Counter()
    for line in labelled.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        text = rec["text"]
        gold = [(e["type"], text.find(e["value"]), text.find(e["value"]) + len(e["value"])) for e in rec["entities"]]
        gold = [g for g in gold if g[0] in ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IPV4", "IPV6")]
        used = set()
        for r in an.analyze(text=text, language="en", entities=list(PRESIDIO_MAP)):
            t = PRESIDIO_MAP[r.entity_type]
            if t == "IP (v4+v6)":
                t = "IPV6" if ":" in text[r.start:r.end] else "IPV4"
            hit = next((i for i, g in enumerate(gold) if i not in used and g[0] == t and r.start < g[2] and g[1] < r.end), None)
            if hit is None:
                fp[t] += 1
            else:
                used.add(hit)
                tp[t] += 1
        for i, g in enumerate(gold):
            if i not in used:
                fn[g[0]] += 1
    return {t: {"precision": round(tp[t] / (tp[t] + fp[t]), 3) if tp[t] + fp[t] else None,
                "recall": round(tp[t] / (tp[t] + fn[t]), 3) if tp[t] + fn[t] else None, "tp": tp[t], "fp": fp[t], "fn": fn[t]}
            for t in ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IPV4", "IPV6")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presidio-messages", type=int, default=300)
    ap.add_argument("--all-recognizers", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    paths = pii.iter_files(spam_assassin_dir(), include=["*.txt"])
    sub = paths[:a.presidio_messages]

    full = pii.scan_paths(paths)
    ours_sub = pii.scan_paths(sub)

    # Presidio works on str: decode as latin-1 (bytes map 1:1, so sizes match what we scan)
    texts = [p.read_bytes().decode("latin-1") for p in sub]
    try:
        an = presidio_analyzer()
    except ImportError as e:
        print(f"presidio not installed ({e}); pip install presidio-analyzer spacy", file=sys.stderr)
        return 2
    entities = None if a.all_recognizers else list(PRESIDIO_MAP)
    an.analyze(text="warm up john@example.com", language="en", entities=entities)
    pc = Counter()
    t0 = time.perf_counter()
    for t in texts:
        for r in an.analyze(text=t, language="en", entities=entities):
            pc[r.entity_type] += 1
    p_sec = time.perf_counter() - t0
    sub_mb = sum(len(t) for t in texts) / 1e6

    ours_counts = dict(ours_sub.counts)
    ours_counts["IP (v4+v6)"] = ours_counts.get("IPV4", 0) + ours_counts.get("IPV6", 0)
    rows = [{"type": ours, "presidio": pc.get(pres, 0), "zeropoint": ours_counts.get(ours, 0)}
            for pres, ours in PRESIDIO_MAP.items()]
    res = {
        "corpus": str(spam_assassin_dir()), "messages": len(paths), "bytes": full.bytes,
        "zeropoint_full": {"seconds": round(full.seconds, 2), "mb_s": round(full.mb / full.seconds, 2),
                           "counts": full.counts, "files_with": full.files_with},
        "same_messages": {"messages": len(sub), "mb": round(sub_mb, 3),
                          "zeropoint_mb_s": round(ours_sub.mb / ours_sub.seconds, 3),
                          "presidio_mb_s": round(sub_mb / p_sec, 4), "presidio_seconds": round(p_sec, 1),
                          "speedup": round((ours_sub.mb / ours_sub.seconds) / (sub_mb / p_sec), 1),
                          "counts": rows, "presidio_other_types": {k: v for k, v in pc.items() if k not in PRESIDIO_MAP}},
        "presidio_recognizers": "all predefined minus SpacyRecognizer" if a.all_recognizers else
                                f"predefined, entities {list(PRESIDIO_MAP)}",
        "target": "zeropoint >= 10x presidio", "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
    }
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "governance"))
    from pii_eval import score
    res["labelled_set"] = {"zeropoint": score()[0], "presidio": presidio_on_labelled(an)}
    res["passed"] = res["same_messages"]["speedup"] >= 10
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        sm = res["same_messages"]
        print(f"Zeropoint, whole corpus: {len(paths)} messages, {full.mb:.1f} MB in {full.seconds:.1f} s = "
              f"{res['zeropoint_full']['mb_s']} MB/s; e-mail found in {full.files_with.get('EMAIL', 0)} of {len(paths)}")
        print(f"Same {sm['messages']} messages ({sm['mb']} MB): Zeropoint {sm['zeropoint_mb_s']} MB/s, Presidio "
              f"{sm['presidio_mb_s']} MB/s -> {sm['speedup']}x (target >= 10x)")
        print(f"{'type':14s} {'presidio':>9s} {'zeropoint':>9s}")
        for r in rows:
            print(f"{r['type']:14s} {r['presidio']:9d} {r['zeropoint']:9d}")
        if sm["presidio_other_types"]:
            print("presidio, other types:", sm["presidio_other_types"])
        print("labelled set (tests/governance/data/pii_labelled.jsonl), precision / recall:")
        for t, v in res["labelled_set"]["zeropoint"].items():
            pv = res["labelled_set"]["presidio"].get(t)
            pres = f"presidio P={pv['precision']} R={pv['recall']}" if pv else "presidio: no such recognizer"
            print(f"  {t:16s} zeropoint P={v['precision']} R={v['recall']}   {pres}")
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
