"""Credentials never reach params, tags or the uploaded config."""

from __future__ import annotations

import pytest

from swat_dist.config import load_config
from swat_dist.redact import REDACTED, redact, redact_text, redact_tree, secret_key
from swat_dist.tracking.describe import flatten, run_params


@pytest.mark.parametrize(
    "key",
    ["hf_token", "tracking.api_key", "db_password", "clientSecret", "model.kwargs.authToken", "AWS_SECRET_ACCESS_KEY",
     "password_file", "key", "data.s3.access_key", "github-pat-token"],
)  # fmt: skip
def test_secret_keys(key):
    assert secret_key(key)
    assert redact({key: "abc"}) == {key: REDACTED}


@pytest.mark.parametrize(
    "key",
    ["model.name", "model.kwargs.token_mixer", "model.kwargs.num_tokens", "key_dim", "tokenizer", "keep_last",
     "monkey_patch", "data.keys", "model.kwargs.token_mlp_ratio"],
)  # fmt: skip
def test_ordinary_keys_stay(key):
    assert not secret_key(key)
    assert redact({key: "conv"}) == {key: "conv"}


def test_numbers_under_secret_looking_keys_stay():
    assert redact({"api_key": 3, "token": 0.5, "hf_token": True}) == {"api_key": 3, "token": 0.5, "hf_token": True}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("https://bob:hunter2@mlflow.example.com/api", "https://bob:***@mlflow.example.com/api"),
        ("postgresql://u:p%40ss@db:5432/mlflow", "postgresql://u:***@db:5432/mlflow"),
        ("s3://bucket/x?X-Amz-Signature=abc&token=zzz", "s3://bucket/x?X-Amz-Signature=***&token=***"),
        ("pipe:curl -H 'Authorization: Bearer eyJabc' https://h/s.tar", "pipe:curl -H 'Authorization: Bearer ***' https://h/s.tar"),
        ("hf_" + "a" * 34, REDACTED),
        ("id AKIAABCDEFGHIJKLMNOP here", f"id {REDACTED} here"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),  # no credentials: untouched
        ("runs/{name}", "runs/{name}"),
        ("user@host:/data", "user@host:/data"),
    ],
)  # fmt: skip
def test_values_with_credentials(text, want):
    assert redact_text(text) == want
    assert redact({"data.path": text}) == {"data.path": want}


def test_tree_and_flattened_config_params():
    tree = {"tracking": {"uri": "https://a:b@h"}, "model": {"kwargs": {"hf_token": "x", "depth": 1}}, "l": ["k=1"]}
    assert redact_tree(tree) == {"tracking": {"uri": "https://a:***@h"},
                                 "model": {"kwargs": {"hf_token": REDACTED, "depth": 1}}, "l": ["k=1"]}  # fmt: skip
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": {}}}) == {"a.b": 1, "a.c": [1, 2], "a.d": {}}
    cfg = load_config(
        [],
        [
            "data.format=synthetic",
            "tracking.uri=https://me:s3cret@mlflow.internal",
            "model.kwargs={api_key: k, depth: 1}",
        ],
    )
    params = run_params(cfg, {"world_size": 2})
    assert params["tracking.uri"] == "https://me:***@mlflow.internal" and params["model.kwargs.api_key"] == REDACTED
    assert params["model.kwargs.depth"] == "1" and params["world_size"] == "2" and params["data.scale"] == "[0.08, 1.0]"
    assert not any("s3cret" in v for v in params.values())
