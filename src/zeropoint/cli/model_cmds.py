"""`zpctl generate`: stream a continuation from a named model, a .gguf file, an HF directory or a checkpoint
(a vlm_finetune checkpoint answers about `--image`)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from .common import AllowSimOpt, JsonOpt, console, handle_errors, print_json


def _source(ref: str, lm) -> dict:
    """What was loaded, with the SHA-256 of the weights actually read (evidence, not just a name)."""
    from ..hashing import sha256_file, sha256_tree
    info = dict(getattr(lm, "load_info", None) or {"path": ref})
    p = Path(info.get("path") or ref)
    if p.is_file():
        info["sha256"] = sha256_file(p)
    elif p.is_dir():
        info["sha256"] = sha256_tree(p)[0]
    return info


def register(app: typer.Typer) -> None:
    @app.command("generate")
    @handle_errors
    def generate_cmd(
        model: str = typer.Argument(..., metavar="CKPT|PATH|NAME",
                                    help="Named model (smollm2-135m), a .gguf file, an HF directory or a checkpoint."),
        prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue (or the user message with --chat)."),
        max_tokens: int = typer.Option(64, "--max-tokens", "-n", min=1, help="Most tokens to generate."),
        temperature: float = typer.Option(0.0, "--temperature", "-t", min=0.0, help="0 = greedy; higher = more random."),
        top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (1 = off)."),
        seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same output)."),
        chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the model's chat template."),
        dtype: str = typer.Option("float32", "--dtype", help="Compute dtype: float32 | float16 | bfloat16."),
        image: Path = typer.Option(None, "--image", help="An image to ask about (a vlm_finetune checkpoint): the "
                                                         "prompt is the user turn, <image> marks where it goes."),
        system: str = typer.Option(None, "--system", help="With --image: a system turn before the prompt (the one "
                                                          "the checkpoint was trained with; default: the chat "
                                                          "template's own)."),
        allow_simulated: bool = AllowSimOpt,
        json_out: bool = JsonOpt,
    ):
        """Generate text with a KV cache, streaming tokens as they come (`--json` prints one document at the end)."""
        from ..errors import ZeropointError
        from ..evidence import start_run
        from ..models.generate import generate_text
        from ..models.vlm import is_vlm_checkpoint
        from ..scope import require_real_compute
        scope = require_real_compute(allow_simulated)
        vision = is_vlm_checkpoint(model)
        if vision != (image is not None):
            raise ZeropointError(f"{model} is a vision-language checkpoint: pass --image PATH" if vision else
                                 "--image needs a vlm_finetune checkpoint; this model reads text only")
        if system is not None and image is None:
            raise ZeropointError("--system is for a vlm_finetune checkpoint with --image; for a text model put the "
                                 "instructions in the prompt")
        cfg = {"model": model, "max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
               "chat": chat or vision, "dtype": dtype, "image": str(image) if image else None, "system": system}
        with start_run("zpctl generate", cfg, kind="generate", seed=seed, scope=scope) as run:
            t0 = time.perf_counter()
            from ..models.llm import open_lm
            from ..models.vlm import generate_from_image, open_vlm_checkpoint
            vlm = open_vlm_checkpoint(model) if vision else None
            loaded = vlm.lm if vlm else open_lm(model, compute_dtype=dtype)
            lm, lcfg, tok = loaded.model, loaded.config, loaded.tokenizer
            if tok is None:
                raise ZeropointError(f"{model} has no tokenizer (tokenizer.json); generate needs one to encode the prompt")
            load_s = time.perf_counter() - t0
            run.update(model_source=_source(model, lm))
            if vlm:
                from ..hashing import sha256_file
                run.update(image={"path": str(image), "sha256": sha256_file(image) if image.is_file() else None})
                chat = True
            if not json_out:
                if scope.simulated:
                    console.print("[bold white on red] SIMULATED - NOT REAL COMPUTE [/]")
                console.print(f"[dim]{model}: {lcfg.n_layers} layers, d={lcfg.dim}, loaded in {load_s:.1f}s "
                              f"on {scope.device}[/]", highlight=False)
                from rich.markup import escape
                console.print(f"[bold]user:[/] {escape(prompt)}\n[bold]assistant:[/] " if chat else escape(prompt),
                              end="", highlight=False)

            def stream(_id, piece):
                sys.stdout.write(piece)
                sys.stdout.flush()

            kw = dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                      on_token=None if json_out else stream)
            res = generate_from_image(vlm, image, prompt, system=system, **kw) if vlm else generate_text(lm, tok, prompt, chat=chat, **kw)
            out = dict(res.to_dict(), model=model, prompt=prompt, image=str(image) if image else None,
                       load_s=round(load_s, 3), run_id=run.id, device=scope.device, simulated=scope.simulated)
            run.event("generation", **{k: v for k, v in out.items() if k != "ids"})
            run.update(result={k: out[k] for k in ("prompt_tokens", "generated_tokens", "first_token_s",
                                                    "decode_tok_s", "stop_reason", "load_s")})
        if json_out:
            return print_json(out)
        sys.stdout.write("\n")
        tps = f"{res.decode_tok_s:.2f} tok/s" if res.decode_tok_s else "n/a tok/s"
        console.print(f"[dim]{len(res.ids)} tokens ({res.stop_reason}); first token {res.prefill_s:.2f}s; "
                      f"decode {tps}; run {run.id}[/]", highlight=False)
