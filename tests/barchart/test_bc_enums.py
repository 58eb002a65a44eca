"""The enumerations match the data file exactly, and the generated module is what the generator renders."""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import orjson
import pytest

from eventpush import _barchart_data
from eventpush.barchart import (
    CustomerType,
    EventJobStatus,
    EventType,
    ProductType,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = json.loads((ROOT / "tests" / "data" / "barchart_enums.json").read_text(encoding="utf-8"))


def test_generated_module_is_what_the_generator_renders() -> None:
    spec = importlib.util.spec_from_file_location("gen_barchart_data", ROOT / "scripts" / "gen_barchart_data.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = Path(_barchart_data.__file__).read_text(encoding="utf-8")
    assert gen.render(DATA) == committed


def test_customers_and_products_match_data() -> None:
    assert [(m.name, m.code, m.description) for m in CustomerType] == [
        (c["member"], c["code"], c["description"]) for c in DATA["customers"]
    ]
    assert [(m.name, m.code, m.description) for m in ProductType] == [
        (p["member"], p["code"], p["description"]) for p in DATA["products"]
    ]
    assert CustomerType.TGAM.description == "The Globe and Mail"
    assert ProductType.CMDTYVIEW_WEB_EXCEL.code == "CMDTYVIEW-WEB-EXCEL"
    assert len(ProductType) == 9


def test_every_event_type_matches_data_exactly() -> None:
    assert len(EventType) == 220 == len(DATA["event_types"])
    for member, row in zip(EventType, DATA["event_types"]):
        assert member.name == row["member"]
        assert member.code == row["code"] and member.value == row["code"]
        assert member.description == row["description"]
        assert member.product is ProductType(row["product"])
        assert list(member.context_keys) == row["context_keys"]
        assert {c.code: [None if v is None else v.name for v in vs] for c, vs in member.validators.items()} == row[
            "validators"
        ]
        assert {c.code: [None if t is None else t.name for t in ts] for c, ts in member.transformers.items()} == row[
            "transformers"
        ]
        for alias in row["aliases"]:
            assert EventType[alias] is member
    counts = {}
    for member in EventType:
        counts[member.product.name] = counts.get(member.product.name, 0) + 1
    assert counts == {
        "ALERT": 9, "WATCHLIST": 18, "PORTFOLIO": 25, "CMDTYVIEW": 55, "ENTITLEMENTS": 1, "MARKETPLACE": 5,
        "CMDTYVIEW_WEB_EXCEL": 23, "BARCHART_WEB_EXCEL": 17, "BARCHART_EXCEL": 67,
    }  # fmt: skip


def test_irregular_codes_and_alias() -> None:
    assert EventType.WATCHLIST_SYMBOL_ADDED.code == "WATCHLIST-SYMBOL-ADDED"
    assert EventType.parse("CMDTYVIEW-HISTORY-AGGREGATION-MENU_SHOWN") is not None
    assert EventType.PORTFOLIO_SHOW_CLOSED_POSITIONS_CHANGED.code == "PORTFOLIO-CLOSED-POSITIONS-CHANGED"
    assert EventType.PORTFOLIO_TRANSACTION_HISTORY_SINGLE_INVOKED.code == "PORTFOLIO-SCREEN-INVOKED-TRANSACTIONS-SINGLE"
    assert EventType.ENTITLEMWENTS_AUTHORIZATION_FAILED is EventType.ENTITLEMENTS_AUTHORIZATION_FAILED
    assert EventType.ENTITLEMENTS_AUTHORIZATION_FAILED.code == "ENTITLEMENTS_AUTHORIZATION_FAILED"
    assert EventType.ENTITLEMENTS_AUTHORIZATION_FAILED.context_keys == ("userId", "operation")
    assert "ENTITLEMWENTS_AUTHORIZATION_FAILED" in EventType.__members__
    assert EventType.MARKETPLACE_CUSTOMER_CREATED.code == "CUSTOMER-CREATED"  # marketplace codes carry no product prefix
    assert EventType.MARKETPLACE_CUSTOMER_CREATED.context_keys == ("userId", "userType", "companyId", "companyName", "entityId")


def test_parse_is_exact_and_case_sensitive() -> None:
    for cls in (CustomerType, ProductType, EventType, EventJobStatus):
        for member in cls:
            assert cls.parse(member.code) is member
            assert cls.parse(member) is member
            if member.code.lower() != member.code:
                assert cls.parse(member.code.lower()) is None
        assert cls.parse("NO-SUCH-CODE") is None
        assert cls.parse(None) is None
        assert cls.parse(3) is None
        assert cls.parse(["x"]) is None
    assert EventType.parse(" WATCHLIST-SYMBOL-ADDED") is None
    assert EventType.parse("WATCHLIST_SYMBOL_ADDED") is None  # member name is not a code
    assert ProductType.parse("CMDTYVIEW_WEB_EXCEL") is None


def test_get_context_keys_for_is_the_unique_union() -> None:
    for product in ProductType:
        expected: list = []
        for row in DATA["event_types"]:
            if row["product"] == product.code:
                for key in row["context_keys"]:
                    if key not in expected:
                        expected.append(key)
        assert EventType.get_context_keys_for(product) == expected
    assert EventType.get_context_keys_for(ProductType.ALERT) == ["userId", "alertId", "symbol"]
    assert EventType.get_context_keys_for("ALERT") == ["userId", "alertId", "symbol"]


def test_validators_and_transformers() -> None:
    v = EventType.ALERT_CREATED.validators[CustomerType.TGAM]
    assert [x.name for x in v] == ["string", "uuid", "string"]
    assert v[1]("6f1c1f1e-0d3b-4c2a-9c43-2f0a7d7f1b9e") and not v[1]("not-a-uuid") and not v[1]("")
    assert v[0]("x") and not v[0]("") and not v[0](None) and not v[0](5)
    assert CustomerType.BARCHART not in EventType.ALERT_CREATED.validators
    tgam_types = [t for t in EventType if CustomerType.TGAM in t.validators]
    assert len(tgam_types) == 27 and {t.product for t in tgam_types} == {ProductType.ALERT, ProductType.WATCHLIST}
    t = EventType.CMDTYVIEW_LOGIN.transformers[CustomerType.BARCHART]
    assert t[:3] == (None, None, None) and t[3]("") == "" and t[3](None) == "" and t[3]("h") == "h"
    assert EventType.CMDTYVIEW_LOGIN.validators[CustomerType.BARCHART][3]("")


def test_job_status() -> None:
    assert [(s.name, s.initial, s.terminal) for s in EventJobStatus] == [
        ("RUNNING", True, False), ("COMPLETE", False, True), ("TIMEOUT", False, True), ("FAILED", False, True),
    ]  # fmt: skip
    assert [(s.code, s.description) for s in EventJobStatus] == [
        (r["code"], r["description"]) for r in DATA["job_statuses"]
    ]


@pytest.mark.parametrize("cls", [CustomerType, ProductType, EventType, EventJobStatus])
def test_members_are_their_codes_and_pickle(cls) -> None:
    for member in cls:
        assert member == member.code and str(member) == member.code and f"{member}" == member.code
        assert orjson.loads(orjson.dumps({"x": member})) == {"x": member.code}
        assert json.loads(json.dumps(member)) == member.code
        assert pickle.loads(pickle.dumps(member)) is member
