"""lm-evaluation-harness `LM` over a zeropoint model, so the same model can be scored by lm-eval itself.

lm-eval (a test dependency, not a runtime one) does the templating, few-shot sampling, context/continuation
tokenisation split and rolling windows; this adapter only turns token requests into numbers through the
same `LMScorer` the harness uses. Usage:

    import lm_eval
    lm = ZeropointLM(model, tokenizer, max_length=2048)
    lm_eval.simple_evaluate(model=lm, tasks=[...], task_manager=...)
"""
from __future__ import annotations

from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM

from .scoring import LMScorer, prefix_token_id, special_id


class ZeropointLM(TemplateLM):
    def __init__(self, model=None, tokenizer=None, max_length: int = 2048, batch_size: int = 8,
                 scorer: LMScorer | None = None):
        super().__init__()
        self.scorer = scorer or LMScorer(model, tokenizer, max_length=max_length, batch_size=batch_size)
        self.tok = self.scorer.tok
        self.max_length = self.scorer.max_length
        self.token_requests: list[tuple[list[int], list[int]]] = []   # what lm-eval asked us to score

    @property
    def eot_token_id(self) -> int:
        return special_id(self.tok, "eos_id", "eos_token_id", "eos")

    @property
    def prefix_token_id(self) -> int:
        return prefix_token_id(self.tok)

    def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
        return self.tok.encode(string, add_bos=False)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        reqs = [(list(ctx), list(cont)) for _, ctx, cont in requests]
        self.token_requests += reqs
        res = self.scorer.loglikelihood_tokens(reqs)
        for (key, _, _), r in zip(requests, res):
            self.cache_hook.add_partial("loglikelihood", key, r)
        return res

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        # lm-eval's own window functions, one scoring call for all windows (as its HF backend batches them)
        windows, owner = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            w = list(map(lm_utils.make_disjoint_window, lm_utils.get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)))
            windows += w
            owner += [i] * len(w)
        self.token_requests += windows
        res = self.scorer.loglikelihood_tokens(windows)
        out = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, res):
            out[i] += ll
        return out

    def generate_until(self, requests, disable_tqdm: bool = False):
        out = []
        for req in requests:
            ctx, gk = req.args
            until = gk.get("until") or []
            out.append(self.scorer.generate_until(ctx, [until] if isinstance(until, str) else list(until),
                                                  int(gk.get("max_gen_toks", 256))))
        return out
