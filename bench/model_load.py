"""Load time of the default subject: first load (dequantize the GGUF, write the safetensors
cache) vs later loads (read the cache), measured side by side in one process.

    python bench/model_load.py [--model smollm2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SELFEXPLAIN_CACHE"] = cache  # an empty cache: the first load converts
        from selfexplain.models.loading import load_model

        start = time.perf_counter()
        load_model(args.model, device="cpu")
        first = time.perf_counter() - start
        start = time.perf_counter()
        load_model(args.model, device="cpu")
        again = time.perf_counter() - start
    print(f"{args.model}: first load {first:.1f} s, cached load {again:.1f} s ({first / again:.0f}x faster)")


if __name__ == "__main__":
    main()
