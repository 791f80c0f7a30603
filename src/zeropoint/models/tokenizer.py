"""Tokenizer over HF `tokenizers`: from tokenizer.json, from GGUF metadata (GPT-2 byte-level BPE), or from
GPT-2's encoder.json + vocab.bpe. Chat templates: a Jinja template is rendered in jinja2's sandbox when jinja2
is installed; otherwise ChatML (`<|im_start|>role\\n...<|im_end|>\\n`), including a template's default system
prompt, which reproduces SmolLM2's template exactly.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ..errors import ZeropointError


class TokenizerError(ZeropointError):
    pass


# SmolLM2's own default system prompt (the template in its GGUF / tokenizer_config.json)
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _byte_level_bpe(vocab: dict[str, int], merges: list, pre: str | None = None):
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # llama.cpp's "smollm" pre-tokenizer splits digits one by one before GPT-2's regex (as SmolLM2's tokenizer.json)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level]) \
        if pre == "smollm" else byte_level
    tok.decoder = decoders.ByteLevel()
    return tok


@dataclass
class Tokenizer:
    hf: object                          # tokenizers.Tokenizer
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    chat_template: str | None = None
    add_bos: bool = False               # whether the model was trained with a BOS at the start of each text
    special_tokens: list[str] = field(default_factory=list)

    # ---- construction ----
    @classmethod
    def from_file(cls, path: str | Path, config_path: str | Path | None = None) -> "Tokenizer":
        """From an HF `tokenizer.json` (+ `tokenizer_config.json` beside it for specials and the chat template)."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer file {path} does not exist; an HF model directory needs tokenizer.json")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception subclasses with Rust messages
            raise TokenizerError(f"cannot parse {path} as an HF tokenizer.json: {e}") from None
        tc = {}
        cpath = Path(config_path) if config_path else path.with_name("tokenizer_config.json")
        if cpath.is_file():
            try:
                tc = json.loads(cpath.read_bytes())
            except (ValueError, RecursionError) as e:
                raise TokenizerError(f"{cpath} is not valid JSON ({type(e).__name__}); the file is corrupt") from None
            if not isinstance(tc, dict):
                raise TokenizerError(f"{cpath} is a JSON {type(tc).__name__}, not an object of tokenizer settings")

        def tok_id(key):
            v = tc.get(key)
            if isinstance(v, dict):
                v = v.get("content")
            return hf.token_to_id(v) if isinstance(v, str) else None
        specials = [t.content for t in hf.get_added_tokens_decoder().values() if t.special]
        return cls(hf, bos_id=tok_id("bos_token"), eos_id=tok_id("eos_token"), pad_id=tok_id("pad_token"),
                   chat_template=tc.get("chat_template") if isinstance(tc.get("chat_template"), str) else None,
                   add_bos=bool(tc.get("add_bos_token", False)), special_tokens=specials)

    @classmethod
    def from_gguf_metadata(cls, meta: dict) -> "Tokenizer":
        """From a GGUF's `tokenizer.ggml.*` keys; GPT-2 style byte-level BPE (Llama 3, SmolLM2, Mistral-Nemo...)."""
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise TokenizerError(f"GGUF tokenizer model {model!r} is not supported (only GPT-2 style BPE, 'gpt2'); "
                                 "use an HF directory with tokenizer.json instead")
        tokens = meta.get("tokenizer.ggml.tokens")
        types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens or [])
        merges = meta.get("tokenizer.ggml.merges", [])
        # checked here: the GGUF reader bounds sizes, not what a tokenizer needs them to be
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise TokenizerError("GGUF tokenizer.ggml.tokens must be a non-empty list of strings; the metadata is corrupt")
        if not isinstance(types, list) or len(types) > len(tokens) or \
                not all(isinstance(t, int) and not isinstance(t, bool) for t in types):
            raise TokenizerError(f"GGUF tokenizer.ggml.token_type must list at most one integer per token "
                                 f"({len(tokens)}); the metadata is corrupt")
        if not isinstance(merges, list) or not all(isinstance(m, str) and m.count(" ") == 1 for m in merges):
            raise TokenizerError("GGUF tokenizer.ggml.merges must be a list of 'a b' strings; the metadata is corrupt")
        for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
            v = meta.get(f"tokenizer.ggml.{key}")
            if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(tokens)):
                raise TokenizerError(f"GGUF tokenizer.ggml.{key} is {v!r}, not a token id (0..{len(tokens) - 1})")
        if not isinstance(meta.get("tokenizer.chat_template") or "", str):
            raise TokenizerError("GGUF tokenizer.chat_template must be a string; the metadata is corrupt")
        try:
            tok = _byte_level_bpe({t: i for i, t in enumerate(tokens)}, merges, meta.get("tokenizer.ggml.pre"))
        except Exception as e:   # tokenizers raises plain Exception subclasses with Rust messages
            raise TokenizerError(f"GGUF tokenizer metadata cannot build a BPE tokenizer: {e}") from None
        # control (3) and user-defined (4) tokens must match whole, never be split by BPE
        specials = [tokens[i] for i, ty in enumerate(types) if ty in (3, 4)]
        tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
        get = meta.get
        return cls(tok, bos_id=get("tokenizer.ggml.bos_token_id"), eos_id=get("tokenizer.ggml.eos_token_id"),
                   pad_id=get("tokenizer.ggml.padding_token_id"), chat_template=get("tokenizer.chat_template"),
                   add_bos=bool(get("tokenizer.ggml.add_bos_token", False)), special_tokens=specials)

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> "Tokenizer":
        """From OpenAI's GPT-2 `encoder.json` + `vocab.bpe`."""
        vocab = json.loads(Path(encoder_json).read_text(encoding="utf-8"))
        lines = Path(vocab_bpe).read_text(encoding="utf-8").splitlines()
        merges = [ln for ln in lines if ln and not ln.startswith("#version")]
        eot = vocab.get("<|endoftext|>")
        return cls(_byte_level_bpe(vocab, merges), bos_id=eot, eos_id=eot)

    # ---- use ----
    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False).ids
        if add_bos:
            if self.bos_id is None:
                raise TokenizerError("this tokenizer has no BOS token; call encode(..., add_bos=False)")
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids, skip_special: bool = False) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def stop_ids(self) -> list[int]:
        """Ids that end a generation: EOS plus ChatML's `<|im_end|>` when the vocab has it."""
        out = [i for i in (self.eos_id, self.token_to_id("<|im_end|>"), self.token_to_id("<|eot_id|>")) if i is not None]
        return sorted(set(out))

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, tokenize: bool = False):
        """Render chat messages ({"role", "content"}) to the prompt string (or ids with tokenize=True)."""
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise TokenizerError(f"chat message {i} must be {{'role': str, 'content': str}}, got {m!r}")
        text = self._render(messages, add_generation_prompt)
        return self.encode(text) if tokenize else text

    def _render(self, messages, add_generation_prompt):
        tpl = self.chat_template or CHATML_TEMPLATE
        # templates come from model files: render them sandboxed, never with plain jinja2
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        tok = lambda i: self.hf.id_to_token(i) if i is not None else ""  # noqa: E731
        return env.from_string(tpl).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                           bos_token=tok(self.bos_id), eos_token=tok(self.eos_id))


def chatml_default_system(template: str | None) -> str | None:
    """The default system prompt a ChatML template inserts when the chat has none (SmolLM2 has one)."""
    if not template:
        return None
    m = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", template, re.S)
    return m.group(1) if m and "!= 'system'" in template else None


def render_chatml(messages: list[dict], add_generation_prompt: bool = True, default_system: str | None = None) -> str:
    out = []
    if default_system is not None and messages and messages[0]["role"] != "system":
        out.append(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    out += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)


def _byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte 0..255 (printable bytes
    stand for themselves, the rest for code points from 256 up, in byte order)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(shifted)) for b in range(256)]


def byte_tokenizer_hf() -> HFTokenizer:
    """`ByteTokenizer` as an HF `tokenizers` object (so as a tokenizer.json transformers loads): byte-level BPE
    with the 256 byte symbols as ids 0..255 and no merges, so every byte is one token, and <|endoftext|> = 256."""
    tok = HFTokenizer(models.BPE(vocab={c: b for b, c in enumerate(_byte_chars())}, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(ByteTokenizer.special_tokens[0], special=True, normalized=False)])
    return tok


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255 and EOS 256: lossless, no files, vocab 257. For tiny models, where a
    49k-token vocabulary would make the output layer a hundred times the rest of the model. `.hf` is the same
    tokenizer in HF form (`byte_tokenizer_hf`), which is what an HF export writes as tokenizer.json."""
    bos_id = None
    eos_id = 256
    pad_id = 256
    add_bos = False
    chat_template = None
    vocab_size = 257
    special_tokens = ["<|endoftext|>"]

    @property
    def hf(self) -> HFTokenizer:
        return byte_tokenizer_hf()

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids, skip_special: bool = False) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def stop_ids(self) -> list[int]:
        return [self.eos_id]

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, tokenize: bool = False):
        text = render_chatml(messages, add_generation_prompt)
        return self.encode(text) if tokenize else text
