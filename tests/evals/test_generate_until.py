import json

import numpy as np
import pytest

from tests.evals.helpers import ByteTokenizer, tiny_model


@pytest.mark.slow
def test_generate_until_is_greedy_cut_at_stop_and_scored_by_exact_match(tmp_path):
    """A real (tiny, random-init) model generates; the harness output must equal an independent greedy loop
    over full forwards, cut at the stop sequence, and exact_match must compare it with the target."""
    from tinygrad import Tensor

    from zeropoint.evals.harness import run_eval
    model, tok = tiny_model(seed=3), ByteTokenizer()
    prompt = "abc"
    ids, gen = tok.encode(prompt), []
    for _ in range(6):   # reference greedy continuation: full forwards, right-padded to one shape (causal)
        seq = ids + gen
        row = np.zeros((1, 32), dtype=np.int32)
        row[0, :len(seq)] = seq
        logits = model(Tensor(row)).numpy()[0, len(seq) - 1]
        nxt = int(logits.argmax())
        if nxt == tok.eos_id:
            break
        gen.append(nxt)
    ref = tok.decode([g for g in gen if g < 256])
    stop = ref[3:4] if len(ref) > 3 and ref[3:4] else "\x00"
    expected = ref.split(stop)[0] if stop in ref else ref
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"q": prompt, "a": expected}) + "\n" + json.dumps({"q": prompt, "a": "nope"}) + "\n")
    (tmp_path / "g.yaml").write_text(f"""task: gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{ q }}}}"
doc_to_target: "{{{{ a }}}}"
generation_kwargs: {{until: {json.dumps([stop])}, max_gen_toks: 6}}
""")
    res = run_eval("tiny", [str(tmp_path / "g.yaml")], model=model, tokenizer=tok, max_length=64)
    m = res["tasks"]["gen"]["metrics"]["exact_match"]
    assert m["value"] == 0.5 and m["n"] == 2
