"""The on-disk request cache: one JSON file per answered request, so nothing answered is ever sent twice.

The key is the SHA-256 of what was asked (endpoint, model, the request's canonical JSON), the sample index and
the attempt number; never of a header, so no key can reach it. Each answer is written atomically the moment
it arrives, so a killed run loses at most the requests in flight.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from affectlens.runtime.providers.base import ApiReply, ApiRequest
from affectlens.store.atomic import write_json


def request_key(spec: str, base_url: str | None, request: ApiRequest, sample: int, attempt: int) -> str:
    asked = {"spec": spec, "base_url": base_url or "", "request": request.canonical()}
    payload = json.dumps(asked | {"sample": sample, "attempt": attempt}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class RequestCache:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> ApiReply | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return ApiReply.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, UnicodeDecodeError):
            return None  # an unreadable entry is asked again, and overwritten

    def put(self, key: str, reply: ApiReply) -> None:
        write_json(self._path(key), reply.to_json())

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None
