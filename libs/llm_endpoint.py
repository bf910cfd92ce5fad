"""Waiting for an OpenAI-compatible LLM server (vLLM, llama.cpp's server) to answer.

Standard library only, so it runs fast in an init container of any service image:
``python -m libs.llm_endpoint http://vllm:8000/v1`` returns once ``GET <base>/models``
answers 200 (sending ``HOSTED_VLLM_API_KEY`` as a bearer token when set), and exits 1
after ``--timeout-s``.
"""

import argparse
import os
import sys
import time
import urllib.error
import urllib.request


def serves(api_base: str, api_key: str = "", timeout_s: float = 5.0) -> bool:
    """True when the server lists its models."""
    request = urllib.request.Request(
        api_base.rstrip("/") + "/models", headers={"Authorization": f"Bearer {api_key}"} if api_key else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_serving(api_base: str, api_key: str = "", timeout_s: float = 3600.0, interval_s: float = 2.0, alive=None) -> None:
    """Poll until the server lists its models, or raise TimeoutError (RuntimeError at once
    when ``alive``, e.g. a check that the server's process still runs, returns False)."""
    deadline = time.monotonic() + timeout_s
    while not serves(api_base, api_key):
        if alive is not None and not alive():
            raise RuntimeError(f"the server of {api_base} exited before it served")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{api_base} did not list its models within {timeout_s:.0f} s")
        time.sleep(interval_s)


def main() -> int:
    parser = argparse.ArgumentParser(description="Wait until an OpenAI-compatible server lists its models.")
    parser.add_argument("api_base", help="e.g. http://vllm:8000/v1")
    parser.add_argument("--timeout-s", type=float, default=3600.0)
    args = parser.parse_args()
    print(f"waiting for {args.api_base}/models", flush=True)
    try:
        wait_until_serving(args.api_base, os.environ.get("HOSTED_VLLM_API_KEY", ""), args.timeout_s)
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{args.api_base} serves", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
