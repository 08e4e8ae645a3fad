"""Masking credentials in what the server answers (pure functions)."""

from __future__ import annotations

from ultron_nb.server.serialize import link, mask_text, scrub


def test_passwords_and_secret_parameters_are_masked() -> None:
    assert mask_text("https://bob:hunter2@flink.example.com:8081/x") == \
        "https://bob:***@flink.example.com:8081/x"
    assert mask_text("cannot reach Flink at http://u:p%40ss@10.0.0.1:8081: timed out") == \
        "cannot reach Flink at http://u:***@10.0.0.1:8081: timed out"
    assert mask_text("postgresql://ultron:s3cret@db/ultron") == "postgresql://ultron:***@db/ultron"
    assert mask_text("http://h/#/job?token=abc123&x=1") == "http://h/#/job?token=***&x=1"
    assert mask_text("http://h/?api_key=K&password=P") == "http://h/?api_key=***&password=***"
    assert mask_text("http://bob@host/") == "http://bob@host/"  # no password: nothing to hide
    assert mask_text("job 3f2a finished") == "job 3f2a finished"


def test_links_for_the_browser_lose_their_user_info() -> None:
    assert link("https://bob:hunter2@flink:8081/#/job/running/j/overview") == \
        "https://flink:8081/#/job/running/j/overview"
    assert link("https://bob@flink/") == "https://flink/"
    assert link(None) is None


def test_scrub_reaches_every_string() -> None:
    payload = {"target": "http://a:b@h", "nodes": [{"error": "at http://a:b@h: refused",
                                                    "n": 3}], "ok": True}
    assert scrub(payload) == {"target": "http://a:***@h",
                              "nodes": [{"error": "at http://a:***@h: refused", "n": 3}],
                              "ok": True}
