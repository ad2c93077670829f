"""The fleet's price table: ``GET /v1/prices``, ``PUT|DELETE /v1/prices/{name}`` (audited).

All prices live in one record, ``prices/table`` (holdfast.keyspace.price); setting or deleting
one entry is a read, an edit and a compare-and-swap of that record together with its audit
entry, so two operators editing different entries at once both land (a lost race is retried
from a fresh read) and a sidecar never sees half a change.

``PUT`` body: ``{"input_per_1m": USD, "output_per_1m": USD, "reason": "..."}`` -- numbers or
decimal strings, 0 to 10000, at most 6 decimals; both required; anything else is refused with
400 naming the field. ``name`` is a release or model name (model names may hold ``/``).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from configsvc import errors
from configsvc.http import actor_of, parse_object, read_body, reply, text
from configsvc.releases import ConfigService, store_read
from holdfast.keyspace import RecordError
from holdfast.keyspace.price import PRICE_FIELDS, Price, PriceTable, validate_price_name
from holdfast.logs import get_logger
from holdfast.store import CasConflict, Put

log = get_logger(__name__)

SET_FIELDS: Final = frozenset({*PRICE_FIELDS, "reason"})
CAS_ATTEMPTS: Final = 5


def parse_price(raw: bytes, name: str) -> tuple[Price, str]:
    """A ``PUT`` body -> (price, reason); InvalidRequest naming the field otherwise. Pure."""
    obj = parse_object(raw, SET_FIELDS)
    for field in PRICE_FIELDS:
        if obj.get(field) is None:
            raise errors.InvalidRequest(f"field {field!r} is required", param=field)
    try:
        price = Price.of_usd({f: obj[f] for f in PRICE_FIELDS}, name=name)
    except RecordError as exc:
        param = next((f for f in PRICE_FIELDS if f in str(exc)), None)
        raise errors.InvalidRequest(str(exc), param=param) from exc
    return price, text(obj, "reason")


def price_name(value: str) -> str:
    try:
        return validate_price_name(value)
    except RecordError as exc:
        raise errors.InvalidRequest(str(exc), param="name") from exc


class PriceOps:
    def __init__(self, service: ConfigService) -> None:
        self.service = service
        self.key = service.keyspace.prices()

    async def table(self) -> tuple[PriceTable, int]:
        kv = await store_read(self.service.store.get(self.key))
        if kv is None:
            return PriceTable(), 0
        try:
            return PriceTable.decode(kv.value), kv.mod_revision
        except RecordError as exc:
            raise errors.StoredRecordInvalid(f"stored price table is unreadable: {exc}") from exc

    async def change(
        self, name: str, price: Price | None, reason: str, actor: str
    ) -> tuple[PriceTable, int]:
        """Set (``price``) or remove (None) one entry; returns the new table and revision."""
        for _ in range(CAS_ATTEMPTS):
            current, found = await self.table()
            before = current.prices.get(name)
            if price is None and before is None:
                raise errors.NotFound(f"no price for {name!r}", param="name")
            prices = dict(current.prices)
            if price is None:
                del prices[name]
            else:
                prices[name] = price
            try:
                table = PriceTable(prices=prices, updated_at=self.service.clock(), updated_by=actor)
            except RecordError as exc:
                raise errors.InvalidRequest(str(exc), param="name") from exc
            entry = self.service.audit_entry(
                actor,
                "price.set" if price is not None else "price.delete",
                self.key,
                reason,
                {"name": name, **before.public()} if before is not None else None,
                {"name": name, **price.public()} if price is not None else None,
                "",
            )
            try:
                revision = await self.service._write(
                    Put(self.key, table.encode(), expected_mod_revision=found), entry
                )
            except CasConflict:
                continue  # another entry changed meanwhile: apply ours to the new table
            log.info("price_changed", name=name, deleted=price is None, actor=actor)
            return table, revision
        raise errors.RevisionConflict(
            "the price table kept changing while it was being written; nothing was written"
        )


def _table_json(table: PriceTable, revision: int) -> dict[str, Any]:
    return {**table.public(), "mod_revision": revision}


class PriceApi:
    def __init__(self, service: ConfigService) -> None:
        self.ops = PriceOps(service)

    async def list_prices(self, request: web.Request) -> web.Response:
        table, revision = await self.ops.table()
        return reply(_table_json(table, revision))

    async def set_price(self, request: web.Request) -> web.Response:
        name, actor = price_name(request.match_info["name"]), actor_of(request)
        price, reason = parse_price(await read_body(request), name)
        table, revision = await self.ops.change(name, price, reason, actor)
        return reply({"name": name, "price": price.public(), **_table_json(table, revision)})

    async def delete_price(self, request: web.Request) -> web.Response:
        name, actor = price_name(request.match_info["name"]), actor_of(request)
        obj = parse_object(await read_body(request), frozenset({"reason"}), empty_ok=True)
        table, revision = await self.ops.change(name, None, text(obj, "reason"), actor)
        return reply({"name": name, "deleted": True, **_table_json(table, revision)})

    def routes(self) -> list[web.RouteDef]:
        one = "/v1/prices/{name:.+}"  # model names may hold '/'
        return [
            web.get("/v1/prices", self.list_prices),
            web.put(one, self.set_price),
            web.delete(one, self.delete_price),
        ]
