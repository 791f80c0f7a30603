import pytest

from tests.helpers import REPO, zpctl, zpctl_json
from zeropoint.errors import ScopeError
from zeropoint.scope import mock_flags_set, require_real_compute, scan_tree


def test_scope_check_finds_yaml_mock_mode(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "app.yaml").write_text("name: x\nMOCK_MODE: true\nother: 1\n")
    (tmp_path / "ok.yaml").write_text("MOCK_MODE: false\n")
    r = zpctl("scope", "check", tmp_path)
    assert r.returncode == 1
    assert "app.yaml:2" in r.stdout and "MOCK_MODE" in r.stdout
    assert "ok.yaml" not in r.stdout


@pytest.mark.parametrize("name,text,line", [
    ("c.toml", "[svc]\nZP_MOCK = \"yes\"\n", 2),
    ("c.json", '{"a": 1, "SYNTHETIC_MODE": true}', 1),
    (".env", "FOO=1\nexport MOCKS_ENABLED=1\n", 2),
])
def test_scope_check_formats(tmp_path, name, text, line):
    (tmp_path / name).write_text(text)
    r, doc = zpctl_json("scope", "check", tmp_path, "--json")
    assert r.returncode == 1
    assert [(h["line"]) for h in doc["hits"]] == [line]


def test_scope_check_clean_tree_and_repo(tmp_path):
    (tmp_path / "a.yaml").write_text("mock_mode_docs: 'see MOCK_MODE in docs'\n")
    assert zpctl("scope", "check", tmp_path).returncode == 0
    assert scan_tree(REPO) == []
    assert zpctl("scope", "check", REPO).returncode == 0


def test_require_real_compute(monkeypatch):
    s = require_real_compute()
    assert s.simulated is False and s.device == "CPU"
    monkeypatch.setenv("MOCK_MODE", "on")
    assert mock_flags_set() == ["MOCK_MODE"]
    with pytest.raises(ScopeError, match="MOCK_MODE.*--allow-simulated"):
        require_real_compute()
    s = require_real_compute(allow_simulated=True)
    assert s.simulated is True and "MOCK_MODE" in s.reasons[0]
