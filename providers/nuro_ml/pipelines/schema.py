"""The published JSON Schema of pipeline specs, generated from the pydantic models.

``schemas/pipeline.schema.json`` is checked in so editors (the YAML language server) can
complete and check specs as they are typed. Regenerate it after changing the models::

    python -m nuro_ml.pipelines.schema            # write it
    python -m nuro_ml.pipelines.schema --check    # exit 1 when the checked-in copy is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nuro_ml.pipelines.spec import PipelineSpec
from nuro_ml.settings import REPO_ROOT

SCHEMA_PATH = REPO_ROOT / "schemas" / "pipeline.schema.json"
SCHEMA_ID = "https://nuro-ml.dev/schemas/pipeline.schema.json"


def build() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a YAML pipeline spec must satisfy."""
    schema: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID}
    schema.update(PipelineSpec.model_json_schema(mode="validation"))
    schema["title"] = "nuro-ml pipeline spec"
    return schema


def render() -> str:
    """The schema as written to disk (stable key order, trailing newline)."""
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nuro_ml.pipelines.schema", description=__doc__.split("\n")[0]
    )
    parser.add_argument("path", nargs="?", type=Path, default=SCHEMA_PATH, help="where the schema lives")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 if the file is out of date"
    )
    args = parser.parse_args(argv)
    expected = render()
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != expected:
            print(f"{args.path} is out of date; run python -m nuro_ml.pipelines.schema", file=sys.stderr)
            return 1
        return 0
    args.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.path.with_suffix(".tmp")
    tmp.write_text(expected)
    tmp.replace(args.path)
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
