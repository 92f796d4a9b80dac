"""Session cookies and CSRF tokens: what a forged, altered, expired or foreign one gets."""

from __future__ import annotations

import pytest

from fleetpulse.console.session import SessionKeys, safe_next, same_origin

KEYS = SessionKeys(b"k" * 32)


def test_a_cookie_holds_the_token_id_until_it_expires() -> None:
    cookie = KEYS.issue("abc", now_s=1000, ttl_s=60)
    assert KEYS.verify(cookie, now_s=1059).token_id == "abc"  # type: ignore[union-attr]
    assert KEYS.verify(cookie, now_s=1060) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),  # signature changed
        lambda c: "eyJ0IjoiZXZpbCIsImUiOjk5OTk5OTk5OTksIm4iOiJ4In0" + c[c.index(".") :],  # body
        lambda c: c.replace(".", ""),
        lambda c: "",
        lambda c: "a.b.c",
    ],
)
def test_an_altered_cookie_is_no_session(tamper) -> None:
    cookie = KEYS.issue("abc", now_s=1000, ttl_s=60)
    assert KEYS.verify(tamper(cookie), now_s=1001) is None


def test_another_key_does_not_accept_the_cookie() -> None:
    cookie = KEYS.issue("abc", now_s=1000, ttl_s=60)
    assert SessionKeys(b"x" * 32).verify(cookie, now_s=1001) is None


def test_csrf_tokens_are_bound_to_one_session() -> None:
    a = KEYS.verify(KEYS.issue("abc", now_s=0, ttl_s=60, nonce="n1"), now_s=1)
    b = KEYS.verify(KEYS.issue("abc", now_s=0, ttl_s=60, nonce="n2"), now_s=1)
    assert a is not None and b is not None
    assert KEYS.csrf_ok(a, KEYS.csrf(a))
    assert not KEYS.csrf_ok(a, KEYS.csrf(b))
    assert not KEYS.csrf_ok(a, "") and not KEYS.csrf_ok(a, None)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SessionKeys(b"short")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/ui/agents?range=1h", "/ui/agents?range=1h"),
        ("/ui/", "/ui/"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui//evil.example", "/ui/"),
        ("/uix/agents", "/ui/"),
        ("/ui/a\r\nSet-Cookie: x=1", "/ui/"),
        (None, "/ui/"),
    ],
)
def test_forms_only_send_you_back_inside_the_console(target, expected) -> None:
    assert safe_next(target, "/ui") == expected


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "127.0.0.1:8700", True),
        ("http://127.0.0.1:8700", "127.0.0.1:8700", True),
        ("https://evil.example", "127.0.0.1:8700", False),
        ("null", "127.0.0.1:8700", False),
    ],
)
def test_same_origin(origin, host, ok) -> None:
    assert same_origin(origin, host) is ok
