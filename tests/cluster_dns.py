"""A forward HTTP proxy that stands in for cluster DNS in tests (issue 12, trainingjob-full.yaml).

Examples name services by their in-cluster names (`http://minio.llmops-system:9000`,
`http://shared-raycluster-head-svc.ray:8265`), which resolve only inside a cluster; an operator run
outside one (as every test here runs it) cannot reach them. Instead of editing the examples or the
machine's /etc/hosts, a test sets the standard proxy environment, which the clients the operator and
the training workload use honour: `requests` (Ray's JobSubmissionClient), botocore (boto3) and
aiohttp with `trust_env=True` send every `http://` request for a host not in NO_PROXY to HTTP_PROXY,
with the absolute URL in the request line. This proxy forwards each request to the local address
`names` maps its host:port to, and answers 502, naming the host, for any other.

Plain `http://` only (no CONNECT tunnels: the examples' in-cluster endpoints are plain HTTP). Bodies
are read whole (Content-Length or chunked), which fits the small objects and API calls of tests.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import socketserver
import sys
import threading
import urllib.parse
from collections.abc import Iterator

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"
}  # fmt: skip


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    names: dict[str, str]
    forwarded: list[tuple[str, str, str]]

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # its client went (a Ray job stopped mid-call)
            return
        super().handle_error(request, client_address)


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _forward(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        host = f"{url.hostname}:{url.port or 80}"
        body = self._body()
        target = self.server.names.get(host)
        if url.scheme != "http" or target is None:
            message = f"the cluster-DNS proxy of this test does not stand in for {host}".encode()
            self.send_response(502)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        connection = http.client.HTTPConnection(target, timeout=120)
        try:
            connection.request(self.command, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        self.server.forwarded.append((self.command, host, target))
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        # A HEAD's Content-Length is the object's size (pyarrow's S3 reads sizes so), not its empty body's.
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes | None:
        """The request's body: Content-Length bytes, or a chunked body (as the AWS SDK for C++ in
        pyarrow uploads) decoded, forwarded with its length."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward

    def log_message(self, format: str, *args: object) -> None:  # quiet: the test prints `forwarded`
        pass


@contextlib.contextmanager
def cluster_dns_proxy(names: dict[str, str]) -> Iterator[_Server]:
    """Serve the proxy on a free loopback port while the block runs. `names`: "host:port" as the
    examples write it -> "127.0.0.1:port" of the local service that stands in. The server's
    `server_address` gives the port (HTTP_PROXY=http://127.0.0.1:<port>); `forwarded` lists
    (method, host:port, target) of each request it forwarded."""
    server = _Server(("127.0.0.1", 0), _Forward)
    server.names = dict(names)
    server.forwarded = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def proxy_environment(server: _Server) -> dict[str, str]:
    """The standard variables (both spellings) that send the clients' requests for the mapped names to
    `server`, and everything on loopback (the apiserver, MinIO and Ray by their local addresses, Ray's
    own gRPC) direct."""
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    direct = "127.0.0.1,localhost,::1"
    return {"HTTP_PROXY": proxy, "http_proxy": proxy, "NO_PROXY": direct, "no_proxy": direct}
