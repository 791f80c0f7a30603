"""Shared by the VLM tests: a real emoji conversation dataset (governed) and a small BPE tokenizer learned from
its training conversations, so a tiny language model's output layer is 512 wide instead of SmolLM2's 49,152."""
import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from zeropoint.data import assets
from zeropoint.data.vlm import write_emoji_vlm_dataset
from zeropoint.models.tokenizer import render_chatml

from vision_helpers import register

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
# ChatML without SmolLM2's default system prompt: shorter rows for a tiny model
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
          "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def emoji_vlm_dataset(root: Path, name: str = "emoji-vlm", per_category: int = 12, **kw) -> dict:
    info = write_emoji_vlm_dataset(root / name, assets.emoji_google_dir() / "emoji.json", per_category=per_category,
                                   **kw)
    register(root / name, name, "Apache-2.0")
    return info


def conversation_tokenizer(dataset_dir: Path, out: Path, vocab_size: int = 400) -> Path:
    """Byte-level BPE learned from the training rows' chat-templated text (held-out rows never shape it)."""
    rows = [json.loads(x) for x in (dataset_dir / "conversations.jsonl").read_text().splitlines() if x.strip()]
    texts = [render_chatml(r["messages"], add_generation_prompt=False) for r in rows if r["split"] == "train"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                                                 "chat_template": CHATML}))
    return out
