"""How a decorated function, its arguments and its return value travel to a Ray job and back.

The function's source and its JSON arguments are compressed into one environment variable of the
job's runtime_env; a short ``python -c`` bootstrap (the source of :func:`run_payload`, which uses
only the standard library, so the cluster needs nothing of ours installed) rebuilds the function,
calls it and prints the return value as the job's last ``NURO_ML_RESULT`` line, which the operator
parses from the job log.

Limits: the encoded payload (function source and arguments) is at most :data:`MAX_PAYLOAD_BYTES`,
because Linux caps one environment string at 128 KiB; the return value is at most
:data:`MAX_RETURN_BYTES` of JSON, as it travels through the job log into XCom. Pass larger data by
reference (a path or URI), as with any XCom.
"""

from __future__ import annotations

import base64
import inspect
import json
import shlex
import zlib
from collections.abc import Collection, Mapping
from typing import Any

from nuro_ml.exceptions import RayJobError

#: runtime_env variable holding the encoded function and arguments.
PAYLOAD_ENV = "NURO_ML_TASK_PAYLOAD"
#: Encoded payload limit (base64 of the compressed JSON), below the kernel's 128 KiB per variable.
MAX_PAYLOAD_BYTES = 96 * 1024
#: Return value limit, as compact JSON.
MAX_RETURN_BYTES = 1024 * 1024
#: Key of the return value in the job's result line.
RETURN_KEY = "return_value"


def _json_arguments(
    name: str, args: Collection[Any], kwargs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    checked_args = []
    for position, value in enumerate(args):
        checked_args.append(_checked(value, f"{name}: positional argument {position}"))
    checked_kwargs = {key: _checked(value, f"{name}: argument {key!r}") for key, value in kwargs.items()}
    return checked_args, checked_kwargs


def _checked(value: Any, where: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise RayJobError(f"{where} cannot be sent to the Ray job: it is not JSON ({err})") from None
    return value


def encode_payload(
    *, source: str, function_name: str, args: Collection[Any], kwargs: Mapping[str, Any]
) -> str:
    """The environment value for :data:`PAYLOAD_ENV`; raises if it is not JSON or too large."""
    json_args, json_kwargs = _json_arguments(function_name, args, kwargs)
    document = {
        "source": source,
        "name": function_name,
        "filename": f"<@task {function_name}>",
        "args": json_args,
        "kwargs": json_kwargs,
    }
    raw = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    encoded = base64.b64encode(zlib.compress(raw, 9)).decode("ascii")
    if len(encoded) > MAX_PAYLOAD_BYTES:
        raise RayJobError(
            f"{function_name}: function source and arguments take {len(encoded)} bytes encoded, over the "
            f"limit of {MAX_PAYLOAD_BYTES}; pass large data by reference (a path or URI)"
        )
    return encoded


def run_payload(encoded: str, marker: str, limit: int) -> None:
    """Run on the cluster: rebuild the function, call it, print ``<marker> {"return_value": ...}``."""
    import base64
    import json
    import linecache
    import sys
    import zlib

    payload = json.loads(zlib.decompress(base64.b64decode(encoded)).decode())
    source, filename = payload["source"], payload["filename"]
    # Tracebacks then quote the function's own lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(source, filename, "exec"), namespace)
    try:
        value = namespace[payload["name"]](*payload["args"], **payload["kwargs"])
    except Exception:
        import traceback

        # Printed here, not by the interpreter at exit, whose printer does not read linecache.
        traceback.print_exc()
        sys.exit(1)
    try:
        text = json.dumps({"return_value": value}, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{payload['name']} returned a value that is not JSON: {err}") from None
    if len(text) > limit:
        raise ValueError(
            f"{payload['name']} returned {len(text)} bytes of JSON, over the limit of {limit}; "
            "return a reference (a path or URI) to large data instead"
        )
    sys.stdout.flush()
    print(marker + " " + text, flush=True)


def bootstrap_command(python: str, marker: str) -> str:
    """The job's entrypoint: ``python -c`` with :func:`run_payload` and the call to it."""
    code = (
        "import os\n"
        + inspect.getsource(run_payload)
        + f"\nrun_payload(os.environ[{PAYLOAD_ENV!r}], {marker!r}, {MAX_RETURN_BYTES})\n"
    )
    return f"{python} -c {shlex.quote(code)}"


def return_value(result: Any, job: str) -> Any:
    """The function's return value from the job's parsed result line."""
    if not isinstance(result, Mapping) or RETURN_KEY not in result:
        raise RayJobError(f"{job} succeeded but printed no return value (no result line in its log)")
    return result[RETURN_KEY]
