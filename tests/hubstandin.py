"""A local stand-in for the Hugging Face Hub's dataset endpoints, for tests: the file tree
(/api/datasets/OWNER/NAME/tree/REVISION) and file downloads (/datasets/OWNER/NAME/resolve/REVISION/PATH),
with a gated repository that answers 401 without a token. It records every request."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse

COMMIT = "c0ffee" * 6 + "beef"


class StandInHub:
    def __init__(self, repos: dict[str, dict[str, bytes]], gated: tuple[str, ...] = ()):
        self.repos, self.gated, self.requests = repos, set(gated), []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
                hub.requests.append((self.command, url.path, self.headers.get("authorization")))
                listing = parts[:2] == ["api", "datasets"] and "tree" in parts
                download = parts[:1] == ["datasets"] and "resolve" in parts
                if not (listing or download):
                    return self.reply(404)
                at = parts.index("tree" if listing else "resolve")
                repo = "/".join(parts[2 if listing else 1 : at])
                if repo not in hub.repos:
                    return self.reply(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
                if repo in hub.gated and not self.headers.get("authorization"):
                    return self.reply(401, b'{"error": "gated"}', {"X-Error-Code": "GatedRepo",
                                                                   "X-Error-Message": "Access is restricted"})
                files = hub.repos[repo]
                if listing:
                    tree = [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                            for p, d in files.items()]
                    return self.reply(200, json.dumps(tree).encode(), {"Content-Type": "application/json"})
                data = files.get("/".join(parts[at + 2 :]))
                if data is None:
                    return self.reply(404, b"", {"X-Error-Code": "EntryNotFound"})
                return self.reply(200, data, {"ETag": f'"{hashlib.sha1(data).hexdigest()}"', "X-Repo-Commit": COMMIT})

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def downloaded(self) -> list[str]:
        return [path for method, path, _ in self.requests if method == "GET" and "/resolve/" in path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
