"""Anthropic's model list paging (pure): limit, after_id, before_id, has_more."""

from __future__ import annotations

import pytest

from holdfast.dialects.anthropic_models import BadPage, model_info, model_page, speaks_anthropic

NAMES = ["a", "b", "c", "d", "e"]


def ids(page: dict[str, object]) -> list[str]:
    return [m["id"] for m in page["data"]]  # type: ignore[attr-defined]


def test_pages_forward_and_back() -> None:
    first = model_page(NAMES, 0, {"limit": "2"})
    assert ids(first) == ["a", "b"] and first["has_more"] and first["last_id"] == "b"
    second = model_page(NAMES, 0, {"limit": "2", "after_id": "b"})
    assert ids(second) == ["c", "d"] and second["has_more"]
    last = model_page(NAMES, 0, {"limit": "2", "after_id": "d"})
    assert ids(last) == ["e"] and not last["has_more"]
    back = model_page(NAMES, 0, {"limit": "2", "before_id": "c"})
    assert ids(back) == ["a", "b"] and not back["has_more"]
    back2 = model_page(NAMES, 0, {"limit": "1", "before_id": "c"})
    assert ids(back2) == ["b"] and back2["has_more"]
    assert ids(model_page(NAMES, 0, {})) == NAMES  # default limit 20
    empty = model_page([], 0, {})
    assert empty == {"data": [], "has_more": False, "first_id": None, "last_id": None}


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"after_id": "zz"}, "after_id"),
        ({"before_id": "zz"}, "before_id"),
        ({"after_id": "a", "before_id": "c"}, "after_id"),
    ],
)
def test_bad_pages_name_their_parameter(query: dict[str, str], param: str) -> None:
    with pytest.raises(BadPage) as info:
        model_page(NAMES, 0, query)
    assert info.value.param == param


def test_model_info_and_who_speaks_anthropic() -> None:
    assert model_info("m", 0) == {
        "type": "model",
        "id": "m",
        "display_name": "m",
        "created_at": "1970-01-01T00:00:00Z",
    }
    assert speaks_anthropic({"anthropic-version": "2023-06-01"})
    assert not speaks_anthropic({"authorization": "Bearer x"})
