"""Integration tests: run against a deployed release (``PYTHONPATH`` is the environment's ``current``).

``SAMPLE_APP_RELEASE_DIR`` is the release the pipeline expects to be testing and
``SAMPLE_APP_EXPECTED_VERSION`` its version; ``APP_ENV`` is the environment.
"""

import os
from pathlib import Path

import sample_app
from sample_app.service import handle


def test_the_deployed_release_is_the_one_under_test() -> None:
    release = Path(os.environ["SAMPLE_APP_RELEASE_DIR"]).resolve()
    assert Path(sample_app.__file__).resolve().is_relative_to(release)
    assert sample_app.__version__ == os.environ["SAMPLE_APP_EXPECTED_VERSION"]


def test_health_is_ok_in_this_environment() -> None:
    answer = handle({"path": "/health"})
    assert answer["status"] == 200
    assert answer["body"]["ok"], answer["body"]["problems"]
    assert answer["body"]["env"] == os.environ["APP_ENV"]


def test_a_quote_end_to_end() -> None:
    answer = handle({"path": "/quote", "body": {"lines": [[1000, 2], [500, 1]], "discountPercent": 10}})
    assert answer["status"] == 200
    body = answer["body"]
    assert (body["currency"], body["subtotal"], body["discount"], body["tax"]) == ("EUR", 2500, 250, 450)
    assert body["total"] == 2700, "the total is subtotal - discount + tax"


def test_unknown_paths_are_404() -> None:
    assert handle({"path": "/nope"})["status"] == 404
