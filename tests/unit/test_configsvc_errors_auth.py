"""configsvc's error table and authorization rules: pure, no event loop."""

from __future__ import annotations

import pytest

from configsvc import errors
from configsvc.errors import ERROR_TABLE, ConfigsvcError, spec_for
from configsvc.http.auth import ACTOR_HEADER, Authorizer, actor_name, is_loopback, presented_token
from holdfast.errorshape import INTERNAL, error_body


def all_subclasses(cls: type[ConfigsvcError]) -> set[type[ConfigsvcError]]:
    found: set[type[ConfigsvcError]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *all_subclasses(sub)}
    return found


def test_every_error_class_has_its_own_table_entry() -> None:
    assert all_subclasses(ConfigsvcError) <= set(ERROR_TABLE)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.InvalidRequest("x"), 400, "invalid_request"),
        (errors.BodyTooLarge("x"), 413, "request_too_large"),
        (errors.Unauthorized("x"), 401, "invalid_token"),
        (errors.AgentNotFound("x"), 404, "agent_not_found"),
        (errors.ReleaseNotFound("x"), 404, "release_not_found"),
        (errors.UnknownEndpoint("x"), 404, "unknown_url"),
        (errors.MethodNotAllowed("x"), 405, "method_not_allowed"),
        (errors.ReleaseExists("x"), 409, "release_exists"),
        (errors.RevisionConflict("x"), 409, "revision_conflict"),
        (errors.NoPreviousRelease("x"), 409, "no_previous_release"),
        (errors.StoreDown("x"), 503, "store_unavailable"),
        (errors.WriteOutcomeUnknown("x"), 503, "write_outcome_unknown"),
        (errors.StoredRecordInvalid("x"), 500, "invalid_stored_record"),
        (ConfigsvcError("x"), 500, "internal_error"),
    ],
)
def test_status_and_code(exc: ConfigsvcError, status: int, code: str) -> None:
    spec = spec_for(exc)
    assert (spec.status, spec.code) == (status, code)


def test_unlisted_subclass_falls_back_to_its_nearest_base() -> None:
    class Gone(errors.NotFound):
        pass

    assert spec_for(Gone("x")).status == 404
    assert spec_for(ConfigsvcError("x")) is INTERNAL


def test_error_body_shape() -> None:
    exc = errors.InvalidRequest("bad field", param="model")
    assert error_body(exc.message, spec_for(exc), exc.param) == {
        "error": {
            "message": "bad field",
            "type": "invalid_request_error",
            "code": "invalid_request",
            "param": "model",
        }
    }


@pytest.mark.parametrize(
    ("remote", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("2001:db8::1", False),
        ("", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_is_loopback(remote: str | None, loopback: bool) -> None:
    assert is_loopback(remote) is loopback


def test_bearer_token_parsing() -> None:
    assert presented_token({"Authorization": "Bearer abc"}) == "abc"
    assert presented_token({"Authorization": "bearer  abc "}) == "abc"
    assert presented_token({"Authorization": "Basic abc"}) == ""
    assert presented_token({}) == ""


AUTH = Authorizer("s3cret-token")
GOOD = {"Authorization": "Bearer s3cret-token"}
WRONG = {"Authorization": "Bearer s3cret-tokeN"}


def test_mutations_need_the_right_token_even_from_loopback() -> None:
    AUTH.check(mutation=True, remote="127.0.0.1", headers=GOOD)
    with pytest.raises(errors.Unauthorized, match="need the configsvc token"):
        AUTH.check(mutation=True, remote="127.0.0.1", headers={})
    with pytest.raises(errors.Unauthorized, match="wrong token"):
        AUTH.check(mutation=True, remote="127.0.0.1", headers=WRONG)


def test_reads_are_open_on_loopback_only() -> None:
    AUTH.check(mutation=False, remote="127.0.0.1", headers={})
    AUTH.check(mutation=False, remote="::1", headers={})
    AUTH.check(mutation=False, remote="10.1.2.3", headers=GOOD)
    with pytest.raises(errors.Unauthorized, match="reads from other hosts"):
        AUTH.check(mutation=False, remote="10.1.2.3", headers={})
    with pytest.raises(errors.Unauthorized):
        AUTH.check(mutation=False, remote="10.1.2.3", headers=WRONG)


def test_no_token_mode_accepts_everything_and_says_so_in_the_actor() -> None:
    open_auth = Authorizer("")
    open_auth.check(mutation=True, remote="10.1.2.3", headers={})
    assert open_auth.actor({ACTOR_HEADER: "alice"}) == "unauthenticated:alice"
    assert AUTH.actor({ACTOR_HEADER: "alice"}) == "token:alice"
    assert AUTH.actor({}) == "token:unknown"
    assert "s3cret" not in repr(AUTH)


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "new\nline", "-leading"])
def test_actor_header_is_validated(bad: str) -> None:
    with pytest.raises(errors.InvalidRequest) as err:
        actor_name({ACTOR_HEADER: bad})
    assert err.value.param == ACTOR_HEADER
