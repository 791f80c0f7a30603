import pytest

from zeropoint.evals.scoring import LMScorer, encode_pair, encode_request, rolling_windows
from tests.evals.helpers import ByteTokenizer, reference_loglikelihoods, tiny_model


class SpaceMergingTokenizer(ByteTokenizer):
    """Merges ' X' into one token (id 300+X) like a GPT-2 BPE does, so the split point matters."""
    def encode(self, text, add_bos=False):
        out, i, b = [], 0, text.encode()
        while i < len(b):
            if b[i] == 32 and i + 1 < len(b) and b[i + 1] != 32:
                out.append(300 + b[i + 1] % 200); i += 2
            else:
                out.append(b[i]); i += 1
        return out


def test_encode_pair_moves_trailing_space_and_splits_whole_encoding():
    tok = SpaceMergingTokenizer()
    ctx, cont = encode_pair(tok, "Answer: ", "A")
    # the space belongs to the continuation token ' A', and the context keeps no dangling space token
    assert ctx == tok.encode("Answer:")
    assert cont == [300 + ord("A") % 200]
    assert ctx + cont == tok.encode("Answer: A")


def test_encode_request_empty_context_uses_prefix_token():
    tok = ByteTokenizer()
    assert encode_request(tok, 256, "", "ab") == ([256], [97, 98])
    assert encode_request(tok, 97, "", "ab") == ([97], [98])   # prefix equals first token: shift it over


def test_rolling_windows_cover_every_token_once_with_lmeval_layout():
    toks = list(range(10))
    w = rolling_windows(toks, 99, max_seq_len=4)
    assert [c for _, c in w] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert w[0][0] == [99]
    # each later window conditions on the tokens just before its predictions (disjoint context)
    assert w[1][0] == [3] and w[2][0] == [5, 6, 7]   # the short last window keeps a full context
    assert sum(len(c) for _, c in w) == len(toks)
    assert rolling_windows([], 99, 4) == []


def test_batched_prefix_shared_scores_match_unbatched_reference():
    model, tok = tiny_model(), ByteTokenizer()
    sc = LMScorer(model, tok, max_length=32, batch_size=8)
    reqs = [encode_pair(tok, "Q: 2+2?\nAnswer:", f" {c}") for c in "ABCD"]
    reqs += [encode_pair(tok, "The cat", " sat on the mat"), encode_pair(tok, "x", "yz"),
             (tok.encode("a" * 60), tok.encode("bc"))]   # longer than max_length: keeps the last 33 tokens
    got = sc.loglikelihood_tokens(reqs)
    ref = reference_loglikelihoods(model, reqs, T=32, B=8)
    for (ll, greedy), (ref_ll, ref_greedy) in zip(got, ref):
        assert ll == pytest.approx(ref_ll, abs=2e-4)
        assert greedy == ref_greedy
    # the four one-token choices share one forward pass
    assert sc.stats["unique_inputs"] == 4 and sc.stats["requests"] == 7
    # the same requests in another order give the same bits (and the jitted replay matches the first call)
    for _ in range(2):
        again = sc.loglikelihood_tokens(list(reversed(reqs)))
        assert list(reversed(again)) == got


def test_longer_buckets_are_released_once_passed_and_scores_do_not_change():
    """Inputs are scored longest first, so the JIT (and the cached buffers) of a longer length bucket is dropped
    as soon as the batches move to a shorter one. Buckets: powers of two up to 256, then multiples of 128."""
    from zeropoint.evals.scoring import _length_bucket
    assert [_length_bucket(n) for n in (20, 33, 256, 257, 300, 547)] == [32, 64, 256, 384, 384, 640]
    model, tok = tiny_model(), ByteTokenizer()
    reqs = [(tok.encode("a" * 40), tok.encode("b")), (tok.encode("xy"), tok.encode("z"))]
    sc = LMScorer(model, tok, max_length=64, batch_size=1)
    got = sc.loglikelihood_tokens(reqs)
    assert sorted(k[1] for k in sc._jits) == [32]                 # the 64 bucket was released
    ref = reference_loglikelihoods(model, reqs[:1], T=64, B=1) + reference_loglikelihoods(model, reqs[1:], T=32, B=1)
    for (ll, greedy), (ref_ll, ref_greedy) in zip(got, ref):
        assert ll == pytest.approx(ref_ll, abs=2e-4) and greedy == ref_greedy
