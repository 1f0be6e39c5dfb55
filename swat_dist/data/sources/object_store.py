"""S3-compatible object stores: the only module that imports ``boto3`` / ``botocore``.

Endpoint, credentials and region come from where every AWS SDK reads them (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``, ~/.aws/config
and credentials); nothing of ours. Every failure is a one-line ``ValueError`` naming the object and what
to check. Transient failures (connection refused or reset, 5xx, throttling, a body cut short) are retried
with exponential backoff up to a time budget: a restarted server or a flaky network costs time, never a
sample. botocore's own retries are off so that one budget governs (its default would add 3 tries per try).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from .location import S3Location

CHUNK = 1 << 20  # bytes per read of an object's body: bounded memory whatever the shard size
START_BUDGET_S = 5.0  # the index and listing at start: a wrong endpoint is reported in seconds, not minutes
READ_BUDGET_S = 120.0  # a shard: a store restarted mid-epoch has two minutes to come back
_DENIED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


class _Transient(Exception):
    """A failure worth retrying."""


class ObjectStore:
    """The objects under one ``s3://bucket/prefix``; safe across fork (each process makes its own client)."""

    def __init__(self, location: S3Location) -> None:
        self.location = location
        self._pid, self._client = -1, None

    def _s3(self) -> Any:
        if self._pid != os.getpid():  # a boto3 client's connection pool must not be shared with a fork
            config = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30)
            self._pid, self._client = os.getpid(), boto3.session.Session().client("s3", config=config)
        return self._client

    def _endpoint(self) -> str:
        return os.environ.get("AWS_ENDPOINT_URL") or "the default AWS endpoint"

    def _call(self, name: str, budget_s: float, fn: Any) -> Any:
        """``fn()`` with retries on transient errors; the rest become one-line ValueErrors naming the object."""
        url, delay, start = self.location.url(name), 0.25, time.monotonic()
        while True:
            try:
                return self._classify(url, fn)
            except _Transient as err:
                if time.monotonic() - start + delay > budget_s:
                    raise ValueError(f"{url}: {err} (retried for {time.monotonic() - start:.0f} s)") from None
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def _classify(self, url: str, fn: Any) -> Any:
        try:
            return fn()
        except botocore.exceptions.ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code == "NoSuchBucket":
                raise ValueError(f"{url}: no such bucket {self.location.bucket!r} at {self._endpoint()}") from None
            if code in _MISSING:
                raise ValueError(f"{url}: no such object") from None
            if code in _DENIED:
                raise ValueError(
                    f"{url}: access denied ({code}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
                ) from None
            if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
                raise _Transient(f"{code or status} from {self._endpoint()}") from None
            raise ValueError(f"{url}: {code}: {err.response.get('Error', {}).get('Message', err)}") from None
        except botocore.exceptions.NoCredentialsError:
            raise ValueError(f"{url}: no credentials: set AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY") from None
        except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError) as err:
            why = err.__class__.__name__
            raise _Transient(f"cannot reach {self._endpoint()} ({why}; check AWS_ENDPOINT_URL)") from None
        except (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError) as err:
            raise _Transient(f"timed out talking to {self._endpoint()} ({err.__class__.__name__})") from None
        except (botocore.exceptions.IncompleteReadError, botocore.exceptions.ResponseStreamingError) as err:
            raise _Transient(f"body cut short ({err.__class__.__name__})") from None

    def read(self, name: str, budget_s: float = START_BUDGET_S) -> bytes:
        """The whole object ``prefix/name`` (small objects: the index)."""
        loc = self.location
        return self._call(
            name, budget_s, lambda: self._s3().get_object(Bucket=loc.bucket, Key=loc.key(name))["Body"].read()
        )

    def names(self, budget_s: float = START_BUDGET_S) -> dict[str, int]:
        """{name below the prefix: size} of every object under it."""
        loc = self.location
        base = f"{loc.prefix}/" if loc.prefix else ""

        def listing() -> dict[str, int]:
            found = {}
            for page in self._s3().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=base):
                found.update({o["Key"][len(base) :]: int(o["Size"]) for o in page.get("Contents", [])})
            return found

        return self._call("", budget_s, listing)

    def check(self, budget_s: float = START_BUDGET_S) -> None:
        """One request (a listing of at most one key under the prefix): the endpoint answers, the bucket
        exists and the keys may list it. For a destination that holds no object yet, where reading an
        index cannot say anything."""
        loc = self.location
        base = f"{loc.prefix}/" if loc.prefix else ""
        self._call("", budget_s, lambda: self._s3().list_objects_v2(Bucket=loc.bucket, Prefix=base, MaxKeys=1))

    def download(self, name: str, dest: Path, size: int, budget_s: float = READ_BUDGET_S) -> None:
        """Write ``prefix/name`` into ``dest`` (truncated first; retried whole), which must end ``size`` bytes long.

        Never writes more than ``size`` bytes: an object of another size is refused from its header, so a
        cache that reserved ``size`` for it stays within its bound."""
        loc = self.location

        def fetch() -> None:
            body = self._s3().get_object(Bucket=loc.bucket, Key=loc.key(name))
            if int(body["ContentLength"]) != size:
                body["Body"].close()
                raise ValueError(
                    f"{loc.url(name)}: {int(body['ContentLength']):,} bytes, index.json says {size:,} "
                    "(changed since it was converted?)"
                )
            with open(dest, "wb") as out:
                for chunk in body["Body"].iter_chunks(CHUNK):
                    out.write(chunk)
            if dest.stat().st_size != size:
                raise _Transient(f"body cut short at {dest.stat().st_size:,} of {size:,} bytes")

        self._call(name, budget_s, fetch)

    def upload(self, src: Path, name: str, budget_s: float = READ_BUDGET_S) -> None:
        """Put the local file ``src`` at ``prefix/name`` (one object, visible whole or not at all)."""
        loc = self.location
        self._call(name, budget_s, lambda: self._s3().upload_file(str(src), loc.bucket, loc.key(name)))

    def delete(self, name: str) -> None:
        loc = self.location
        self._call(name, START_BUDGET_S, lambda: self._s3().delete_object(Bucket=loc.bucket, Key=loc.key(name)))
