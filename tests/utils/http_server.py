"""A local HTTP server on 127.0.0.1 that serves files made by a test (no outside network is used)."""

import http.server
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Optional


class LocalFileServer:
    """Serves ``files`` (URL path -> bytes) on ``http://127.0.0.1:<port>/``.

    ``cut_after`` maps a URL path to a byte count: the server announces the full length but closes
    the connection after that many bytes (a transfer cut in the middle). Unknown paths get 404.
    ``requests`` lists the paths asked for, in order.
    """

    def __init__(self, files: Dict[str, bytes], cut_after: Optional[Dict[str, int]] = None):
        self.files = dict(files)
        self.cut_after = dict(cut_after or {})
        self.requests: list = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                content = server.files.get(self.path)
                if content is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                limit = server.cut_after.get(self.path)
                self.wfile.write(content if limit is None else content[:limit])
                self.wfile.flush()
                if limit is not None:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "LocalFileServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def serve_files(files: Dict[str, bytes], cut_after: Optional[Dict[str, int]] = None) -> Iterator[LocalFileServer]:
    with LocalFileServer(files, cut_after) as server:
        yield server


def unused_local_url(path: str = "/file") -> str:
    """A URL on 127.0.0.1 where nothing listens (for offline tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def write_bytes(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path
