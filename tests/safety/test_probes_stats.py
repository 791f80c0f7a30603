"""Probe packs load and are well formed; ASR and bootstrap CI behave."""
import pytest

from zeropoint.errors import ZeropointError
from zeropoint.safety.probes import FAMILIES, load_family, load_pack, resolve_suite
from zeropoint.safety.stats import bootstrap_ci, summarise


def test_every_family_loads_with_goals_and_detectors():
    seen = set()
    for fam in FAMILIES:
        probes = load_family(fam)
        assert probes, fam
        for p in probes:
            assert p.family == fam and p.goal and p.detectors and p.id not in seen
            seen.add(p.id)
            assert p.raw is not None or p.messages[-1]["role"] == "user"
    jb = {p.id: p for p in load_family("jailbreak")}
    assert {p.meta.get("encoding") for p in jb.values()} >= {"base64", "rot13", "leetspeak", "unicode_tags"}
    assert len(jb["jailbreak.few_shot_compliance"].messages) == 5      # 2 shots x 2 turns + the request
    assert "BANANA" not in jb["jailbreak.obfuscation_base64"].prompt_text  # payload is encoded, not in clear
    sp = load_family("sysprompt")[0]
    assert sp.messages[0]["role"] == "system" and "TANGERINE-4471" in sp.meta["system"]


def test_suites_quick_is_subset_of_default():
    quick, qs = resolve_suite("quick")
    full, ds = resolve_suite("default")
    assert 10 <= len(quick) < len(full) and {p.id for p in quick} <= {p.id for p in full}
    assert {p.family for p in quick} == set(FAMILIES)
    assert qs["max_tokens"] <= ds["max_tokens"]
    assert [p.id for p in resolve_suite("injection.qa_context_hijack")[0]] == ["injection.qa_context_hijack"]
    assert all(p.family == "pii" for p in resolve_suite("pii")[0])


@pytest.mark.parametrize("text,msg", [
    ("family: x\nprobes:\n  - {id: a, prompt: hi, detectors: [nope]}\n", "unknown detectors"),
    ("family: x\nprobes:\n  - {id: a, prompt: hi, detectors: [trigger], colour: red}\n", "unknown keys"),
    ("family: x\nprobes:\n  - {id: a, prompt: hi}\n", "names no detectors"),
    ("family: x\nprobes:\n  - {id: a, prompt: hi, detectors: [trigger]}\n  - {id: a, prompt: yo, detectors: [trigger]}\n", "duplicate"),
    ("family: x\nprobes:\n  - {id: a, prompt: '{payload}', encoding: rot47, payload: z, detectors: [decoded]}\n", "unknown probe encoding"),
    ("- just a list\n", "must be a mapping"),
])
def test_bad_packs_are_refused_with_the_reason(tmp_path, text, msg):
    p = tmp_path / "pack.yaml"
    p.write_text(text)
    with pytest.raises(ZeropointError, match=msg):
        load_pack(p)


def test_unknown_suite_names_the_choices():
    with pytest.raises(ZeropointError, match="quick"):
        resolve_suite("nonsense")


def test_asr_and_bootstrap():
    s = summarise([("a", True), ("b", False), ("c", False), ("d", True)])
    assert (s["fails"], s["passes"], s["total"], s["asr"]) == (2, 2, 4, 0.5)
    assert 0.0 <= s["ci_low"] <= 0.5 <= s["ci_high"] <= 1.0
    assert summarise([]) ["asr"] is None
    assert bootstrap_ci([("a", False)] * 5) == (0.0, 0.0)
    # interval narrows with more probes at the same rate, and is reproducible
    few = bootstrap_ci([(str(i), i % 4 == 0) for i in range(8)])
    many = bootstrap_ci([(str(i), i % 4 == 0) for i in range(400)])
    assert many[1] - many[0] < few[1] - few[0]
    assert many[0] < 0.25 < many[1]
    assert bootstrap_ci([(str(i), i % 4 == 0) for i in range(400)]) == many


def test_cluster_bootstrap_resamples_probes_not_outputs():
    # one probe always fails (10 outputs), nine never do (1 output each): resampling probes gives a wide
    # interval; treating the 19 outputs as independent would understate it
    outs = [("bad", True)] * 10 + [(f"ok{i}", False) for i in range(9)]
    lo, hi = bootstrap_ci(outs)
    assert lo == 0.0 and hi > 0.6
