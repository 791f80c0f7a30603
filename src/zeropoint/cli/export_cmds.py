"""`zpctl export` and `zpctl parity`: write an artifact for the runtime that will serve it, and prove it still
computes what the trained model computes (same real inputs, figures, a gate, a non-zero exit on failure)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..export.formats import ADAPTER_FORMATS, LLM_FORMATS
from .common import AllowSimOpt, JsonOpt, console, err_console, handle_errors, print_json

FORMATS = " | ".join(LLM_FORMATS)


def _load(ref: str):
    """-> (model with LoRA merged, llama cfg, tokenizer, source info, gguf tokenizer metadata or None).
    A checkpoint directory (manifest.json) goes through the finetune recipe's verified loader."""
    from ..models.gguf import read_header, tokenizer_metadata
    from ..models.llm import open_lm
    from ..models.registry import resolve_ref
    lm = open_lm(ref)
    if lm.info["kind"] == "checkpoint":
        return lm.model, lm.config, lm.tokenizer, {"ref": ref, "path": str(Path(ref)), "kind": "checkpoint",
                                                   "base": lm.info["base"], "method": lm.info["method"]}, None
    path = resolve_ref(ref)
    # the header alone (metadata, no tensors): the export copies the source's tokenizer and name from it
    meta = tokenizer_metadata(read_header(path, tensors=False)[0]) if path.is_file() and path.suffix == ".gguf" else None
    return lm.model, lm.config, lm.tokenizer, {"ref": ref, "path": str(path), "kind": lm.info["kind"],
                                               "name": lm.info["name"]}, meta


def _render(rep: dict) -> None:
    from ..export.parity import summary_line
    for line in summary_line(rep).split("; "):
        console.print(("[green]" if line.endswith("PASS") else "[red]") + line + "[/]", highlight=False)
    for name, m in (rep.get("informational_runtimes") or {}).items():
        console.print(f"{name} (not gated): top1={100 * m['top1_agreement']:.2f}% max_abs={m['max_abs']:.3g}; "
                      f"{m['why_not_gated']}", highlight=False)
    if rep.get("gguf_runtime", {}).get("runtime") == "llama.cpp-emulated":
        console.print("[yellow]llama.cpp figures are emulated[/] (numpy, export/llamacpp.py): "
                      f"{rep['gguf_runtime']['why']}", highlight=False)
    for f in rep["failures"]:
        err_console.print(f"[bold red]gate failed:[/] {f}", highlight=False)


def _finish(rec: dict, json_out: bool) -> None:
    if json_out:
        print_json(rec)
    else:
        console.print(f"[bold]{rec['id']}[/] -> {rec['dir']}  ({rec['format']}, "
                      f"{sum(f['size'] for f in rec['files']) / 1e6:.1f} MB)", highlight=False)
        _render(rec["parity"])
        for name, why in (rec["parity"].get("skipped_runtimes") or {}).items():
            console.print(f"[yellow]{name} not run:[/] {why}", highlight=False)
        console.print(f"status: [{'green' if rec['status'] == 'succeeded' else 'red'}]{rec['status']}[/]")
    raise typer.Exit(0 if rec["status"] == "succeeded" else 1)


def register(app: typer.Typer) -> None:
    @app.command("export")
    @handle_errors
    def export_cmd(
        src: str = typer.Argument(..., metavar="SRC", help="Named model (smollm2-135m), .gguf file, HF directory, or a "
                                                          "finetune checkpoint dir (LoRA is merged; --format peft "
                                                          "writes its adapters instead)."),
        fmt: str = typer.Option("onnx", "--format", "-f", help=f"Artifact format: {FORMATS}."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (default "
                                                                    "$ZP_HOME/exports/<export_id>/; must be new or empty)."),
        seq_len: Optional[int] = typer.Option(None, "--seq-len", help="ONNX: fix the sequence axis to this length "
                                                                      "(default: dynamic)."),
        parity_seqs: Optional[int] = typer.Option(None, "--parity-seqs", min=1, help="Held-out SOTU sequences used for "
                                                  "parity (default: 64 for int8/f16/q8_0 formats, 8 for exact ones)."),
        parity_len: int = typer.Option(64, "--parity-len", min=2, help="Tokens per parity sequence."),
        tinygrad_runner: Optional[bool] = typer.Option(None, "--tinygrad-runner/--no-tinygrad-runner",
                                                       help="Also run the ONNX graph through tinygrad's OnnxRunner "
                                                            "(default: only for models under 50M params)."),
        allow_simulated: bool = AllowSimOpt,
        json_out: bool = JsonOpt,
    ):
        """Export a Llama-family model and run parity against it automatically; exit 1 if the gate fails.

        Gates: fp32 (onnx, hf) max abs <= 1e-4 and top-1 100%; gguf (F32) max abs <= 1e-5; int8/f16/q8_0 top-1
        >= 99% and perplexity within 2% of the original. ONNX artifacts are gated against a float64 evaluation
        of the original weights (their distance to fp32 tinygrad is reported beside it). A manifest.json (source hash, figures, file hashes)
        is written next to the artifact either way."""
        from ..errors import ZeropointError
        from ..evidence import start_run
        from ..export.pipeline import export_llama, export_peft
        from ..scope import require_real_compute
        if fmt not in LLM_FORMATS:
            raise ZeropointError(f"unknown --format {fmt!r}; choose one of {', '.join(LLM_FORMATS)}")
        scope = require_real_compute(allow_simulated)
        cfg = {"src": src, "format": fmt, "out": str(out) if out else None, "seq_len": seq_len,
               "parity_seqs": parity_seqs, "parity_len": parity_len}
        with start_run("zpctl export", cfg, kind="export", scope=scope) as run:
            with console.status("loading the source model") as status:
                say = lambda m: status.update(m) if not json_out else None  # noqa: E731
                if fmt in ADAPTER_FORMATS:   # the checkpoint's own adapters, unmerged
                    rec = export_peft(src, out, n_seq=parity_seqs, seq_len=parity_len, progress=say)
                else:
                    model, lcfg, tok, source, meta = _load(src)
                    if tok is None:
                        raise ZeropointError(f"{src} has no tokenizer; parity needs one to tokenise the held-out text")
                    rec = export_llama(model, lcfg, tok, source, fmt, out, n_seq=parity_seqs, seq_len=parity_len,
                                       seq_axis=seq_len, tinygrad_runner=tinygrad_runner, gguf_meta=meta, progress=say)
            run.update(export_id=rec["id"], export_dir=rec["dir"], export_status=rec["status"])
            run.event("export", id=rec["id"], status=rec["status"], passed=rec["parity"]["passed"])
        _finish(rec, json_out)

    @app.command("parity")
    @handle_errors
    def parity_cmd(
        original: str = typer.Argument(..., help="The original: named model, .gguf, HF dir or checkpoint dir."),
        exported: Path = typer.Argument(..., help="The artifact: .onnx, .gguf, HF dir, or an export directory."),
        fmt: Optional[str] = typer.Option(None, "--format", "-f", help=f"Gate to apply ({FORMATS}); default from "
                                                                        "the export manifest or the file type."),
        parity_seqs: Optional[int] = typer.Option(None, "--parity-seqs", min=1, help="Held-out sequences (default: 64 "
                                                  "for quantized formats, 8 for exact ones)."),
        parity_len: int = typer.Option(64, "--parity-len", min=2),
        tinygrad_runner: bool = typer.Option(False, "--tinygrad-runner", help="Also run tinygrad's OnnxRunner."),
        gguf_runtime: str = typer.Option("auto", "--gguf-runtime", help="GGUF: auto (llama.cpp when "
                                         "llama-cpp-python is installed, else its emulation) | llama.cpp | "
                                         "llama.cpp-emulated. The report names the one that ran."),
        allow_simulated: bool = AllowSimOpt,
        json_out: bool = JsonOpt,
    ):
        """Compare an exported artifact with the original on held-out real text; exit 1 if the gate fails.

        A GGUF runs in llama.cpp's kernels (llama-cpp-python, the llamacpp extra) or, without it, in a numpy
        emulation of them, and in the project's own loader."""
        from ..evidence import start_run
        from ..export.pipeline import parity_llama
        from ..scope import require_real_compute
        scope = require_real_compute(allow_simulated)
        with start_run("zpctl parity", {"original": original, "exported": str(exported), "format": fmt},
                       kind="parity", scope=scope) as run:
            with console.status("running both models"):
                model, _, tok, _, _ = _load(original)
                rep = parity_llama(model, tok, exported, fmt, parity_seqs, parity_len, tinygrad_runner, gguf_runtime)
            run.update(parity=rep)
        if json_out:
            print_json(rep)
        else:
            _render(rep)
        raise typer.Exit(0 if rep["passed"] else 1)
