import json
import tracemalloc

from typer.testing import CliRunner

from zeropoint.governance import pii

from .pii_eval import score


def test_labelled_set_precision_recall_per_type():
    res, errors = score()
    for t, v in res.items():
        assert v["tp"] >= 15, f"{t}: labelled set too small to measure"
        assert v["precision"] >= 0.95 and v["recall"] >= 0.95, (t, v, [e for e in errors if e[1] == t])


def test_validators():
    assert pii.luhn_ok("4111111111111111") and not pii.luhn_ok("4111111111111112")
    assert pii.iban_ok("DE89370400440532013000") and not pii.iban_ok("DE88370400440532013000")
    assert pii.ssn_ok("123", "45", "6789")
    for a, g, s in [("000", "12", "3456"), ("666", "12", "3456"), ("900", "12", "3456"), ("123", "00", "4567"),
                    ("123", "45", "0000")]:
        assert not pii.ssn_ok(a, g, s)


def test_findings_have_offsets_lines_and_redacted_samples(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"hello\nmail bob@example.com now\ncard 4111 1111 1111 1111\n")
    found = []
    fs = pii.scan_file(f, on_finding=found.append)
    assert fs.counts == {"EMAIL": 1, "CREDIT_CARD": 1} and fs.lines == 3
    email, card = found
    assert (email.start, email.line) == (11, 2) and f.read_bytes()[email.start:email.end] == b"bob@example.com"
    assert card.line == 3 and card.sample.endswith("1111") and "4111 1111" not in card.sample
    assert "bob@" not in email.sample and email.confidence > 0.5


def test_block_boundaries_do_not_change_results(tmp_path):
    lines = [f"user{i}@example.org called (415) 555-{1000 + i:04d} from 10.0.{i % 250}.{i % 200 + 1}\n" for i in range(400)]
    f = tmp_path / "big.txt"
    f.write_text("".join(lines))
    small = pii.scan_file(f, block=1000)   # cut every few lines, sometimes mid-line
    big = pii.scan_file(f)
    assert small.counts == big.counts == {"EMAIL": 400, "PHONE": 400, "IPV4": 400}
    assert small.lines == big.lines == 400


def test_memory_stays_flat_on_large_input(tmp_path):
    f = tmp_path / "large.txt"
    block = (b"lorem ipsum dolor sit amet " * 7 + b"\n") * 999 + b"contact alice@example.com or 8.8.8.8\n"
    with open(f, "wb") as out:
        for _ in range(48):
            out.write(block)   # ~9 MB
    tracemalloc.start()
    fs = pii.scan_file(f, block=256 << 10)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert fs.counts == {"EMAIL": 48, "IPV4": 48} and fs.bytes > 8e6
    # a 256 KiB block plus its shape/lower copies and the carried line: ~1 MB whatever the file size
    assert peak < 3 << 20, f"peak {peak} bytes for a {fs.bytes}-byte file"


def test_redacted_copy(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "m.txt").write_text("SSN 536-22-1234, key AKIAIOSFODNN7EXAMPLE, mail a.b@example.com\n")
    out = tmp_path / "out"
    r = CliRunner().invoke(__import__("zeropoint.cli.main", fromlist=["app"]).app,
                           ["pii", "scan", str(src), "--redact", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["counts"]["US_SSN"] == 1 and rep["counts"]["SECRET"] == 1 and rep["counts"]["EMAIL"] == 1
    assert (out / "m.txt").read_text() == "SSN [US_SSN], key [SECRET], mail [EMAIL]\n"
    assert rep["throughput_mb_s"] is not None and rep["risk"] in ("none", "low", "medium", "high")
    bad = CliRunner().invoke(__import__("zeropoint.cli.main", fromlist=["app"]).app,
                             ["pii", "scan", str(src / "m.txt"), "--redact", str(src / "m.txt")])
    assert bad.exit_code == 2 and "overwrite" in bad.output


def test_spamassassin_every_message_has_an_email():
    from zeropoint.data.assets import spam_assassin_dir
    paths = pii.iter_files(spam_assassin_dir(), include=["*.txt"])
    assert len(paths) > 6000
    rep = pii.scan_paths(paths)
    assert rep.files_with["EMAIL"] == len(paths), "a message without a detected e-mail address"
    assert rep.files_with.get("IPV4", 0) > 0.9 * len(paths)
