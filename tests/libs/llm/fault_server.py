"""A real OpenAI-compatible chat-completions server on loopback that answers from a script:
each request pops the next behaviour (status code, Retry-After, delay, body text)."""

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int = 200
    text: str = "ok"
    retry_after: str | None = None
    delay_s: float = 0.0


class FaultServer:
    def __init__(self, script: list[Reply], default: Reply | None = None, choose=None, host: str = "127.0.0.1", port: int = 0):
        """Replies come from ``choose(request_body)`` when given, else from the script, then ``default``."""
        self.choose = choose
        self.script = list(script)
        self.default = default or Reply()
        self.requests: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with server._lock:
                    server.requests.append((time.monotonic(), body))
                    if server.choose is not None:
                        reply = server.choose(body)
                    else:
                        reply = server.script.pop(0) if server.script else server.default
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    payload = json.dumps(
                        {"error": {"message": f"scripted {reply.status}", "type": "server_error", "code": reply.status}}
                    ).encode()
                else:
                    payload = json.dumps(
                        {
                            "id": "chatcmpl-test",
                            "object": "chat.completion",
                            "created": int(time.time()),
                            "model": body.get("model", "fault"),
                            "choices": [
                                {"index": 0, "message": {"role": "assistant", "content": reply.text}, "finish_reason": "stop"}
                            ],
                            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
                        }
                    ).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    if reply.retry_after is not None:
                        self.send_header("retry-after", reply.retry_after)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "FaultServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
