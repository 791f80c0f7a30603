from pathlib import Path

import pytest
from typer.testing import CliRunner

from zeropoint.errors import ConfigError
from zeropoint.governance import audit, licenses
from zeropoint.governance.policy import init_policy, load_policy, policy_path


@pytest.mark.parametrize("expr,decision,rule", [
    ("MIT", "allow", "licenses.categories.permissive"),
    ("Apache-2.0", "allow", "licenses.categories.permissive"),
    ("CC0-1.0", "allow", "licenses.categories.permissive"),
    ("Apache-2.0 OR GPL-2.0-only", "allow", "licenses.or"),
    ("CC-BY-NC-4.0", "deny", "licenses.categories.noncommercial"),
    ("LicenseRef-proprietary", "deny", "licenses.deny"),
    ("Made-Up-License-1.0", "review", "licenses.categories.unknown"),
    ("CC-BY-SA-4.0", "review", "licenses.categories.copyleft"),
    ("MIT AND CC-BY-NC-4.0", "deny", "licenses.and"),
    ("GPL-3.0-only", "review", "licenses.categories.copyleft"),
])
def test_default_policy_decisions_name_their_rule(expr, decision, rule):
    pol, src = load_policy()
    assert src == "packaged default"
    d = licenses.decide(expr, pol.licenses)
    assert d.decision == decision
    assert rule in [r["rule"] for r in d.rules]
    assert all(r["why"] for r in d.rules)


def test_flags_share_alike_noncommercial_public_domain():
    sa = licenses.describe("CC-BY-SA-4.0")
    assert sa["share_alike"] and sa["attribution"] and sa["commercial_use"]
    nc = licenses.describe("CC-BY-NC-4.0")
    assert not nc["commercial_use"] and not nc["share_alike"]
    pd = licenses.describe("cc0-1.0")
    assert pd["expression"] == "CC0-1.0" and not pd["attribution"]
    assert licenses.describe("GPL-2.0+")["expression"] == "GPL-2.0-or-later"


def test_bad_expression_is_a_clear_error():
    with pytest.raises(licenses.LicenseError, match="SPDX"):
        licenses.describe("MIT AND (")


def test_explicit_lists_override_categories():
    p = policy_path()
    init_policy()
    raw = p.read_text().replace("allow: []", "allow: [CC-BY-SA-4.0]").replace("version: default-1", "version: local-2")
    p.write_text(raw)
    pol, src = load_policy()
    assert pol.version == "local-2" and src == str(p)
    d = licenses.decide("CC-BY-SA-4.0", pol.licenses)
    assert d.decision == "allow" and d.rules[0]["rule"] == "licenses.allow"


def test_policy_init_is_audited_and_refuses_overwrite():
    p = init_policy(actor="lead")
    assert p.is_file()
    ev = audit.read_events()[-1]
    assert ev["action"] == "policy_init" and ev["actor"] == "lead"
    with pytest.raises(ConfigError, match="--force"):
        init_policy()


def test_invalid_policy_names_the_key():
    p = policy_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("version: x\nlicenses:\n  categoriez: {}\n")
    with pytest.raises(ConfigError, match="categoriez"):
        load_policy()


def test_real_license_texts_and_deny_phrases():
    pol, _ = load_policy()
    phrases = pol.licenses.deny_phrases
    for name in ("Apache-2.0", "GPL-3", "MPL-2.0", "CC0-1.0"):
        f = Path("/usr/share/common-licenses") / name
        if f.exists():
            assert licenses.find_phrases(f.read_text(), phrases) == [], name
    assert licenses.find_phrases("Free to read. NO AI  Training or\nnon-commercial use only.", phrases) == [
        "no ai training", "non-commercial"]


def test_cli_policy_check_exit_code():
    from zeropoint.cli.main import app
    r = CliRunner()
    assert r.invoke(app, ["data", "policy", "check", "MIT"]).exit_code == 0
    out = r.invoke(app, ["data", "policy", "check", "CC-BY-NC-4.0"])
    assert out.exit_code == 1 and "noncommercial" in out.stdout


COMMON = Path("/usr/share/common-licenses")


@pytest.mark.parametrize("fname,spdx", [
    ("Apache-2.0", "Apache-2.0"), ("GPL-2", "GPL-2.0-only"), ("GPL-3", "GPL-3.0-only"), ("LGPL-2.1", "LGPL-2.1-only"),
    ("LGPL-3", "LGPL-3.0-only"), ("MPL-2.0", "MPL-2.0"), ("CC0-1.0", "CC0-1.0"), ("BSD", "BSD-3-Clause"),
    ("GFDL-1.3", "GFDL-1.3-only"), ("GPL-1", "GPL-1.0-only")])
def test_identifies_real_license_texts(fname, spdx):
    f = COMMON / fname
    if not f.exists():
        pytest.skip(f"{f} not on this machine")
    assert licenses.identify_text(f.read_text(errors="replace")) == [spdx]


def test_declared_covers_family():
    assert licenses.declared_covers("GPL-2.0-or-later", "GPL-2.0-only")
    assert licenses.declared_covers("MIT OR Apache-2.0", "Apache-2.0")
    assert not licenses.declared_covers("MIT", "GPL-3.0-only")
