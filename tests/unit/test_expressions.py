from decimal import Decimal
from typing import Any

import pytest

from runtime.expressions import (
    Expression,
    ExpressionError,
    event_index_keys,
    index_key,
    index_term,
    interpolate,
    match_expression,
)

EVENT: dict[str, Any] = {
    "name": "order/created",
    "data": {
        "amount": 150.5,
        "count": 3,
        "plan": "pro",
        "user_id": "u_1",
        "tags": ["a", "b"],
        "quote": 'he said "hi" \\ it\'s\nnext',
        "nested": {"a": {"b": [1, {"c": None}]}},
        "negative": -5,
        "flag": True,
    },
}


def matches(source: str, **variables: Any) -> bool:
    return Expression.compile(source, where="test").matches(**variables)


# --- compile ---------------------------------------------------------------------------


def test_compile_keeps_source_and_where() -> None:
    expr = Expression.compile("event.data.plan == 'pro'", where="function 'f' trigger 'x'")
    assert expr.source == "event.data.plan == 'pro'"
    assert expr.where == "function 'f' trigger 'x'"


def test_syntax_error_names_where_source_and_position() -> None:
    where = "function 'x' trigger 'user/signup' if-expression"
    with pytest.raises(ExpressionError) as info:
        Expression.compile("event.data.x ==", where=where)
    message = str(info.value)
    assert message.startswith(f"{where}: invalid CEL expression 'event.data.x =='")
    assert "line 1, column 14" in message
    assert message.endswith("event.data.x ==\n             ^")


def test_syntax_error_on_second_line_points_there() -> None:
    with pytest.raises(ExpressionError, match=r"line 2, column 3:\n  && 1\n  \^$"):
        Expression.compile("event.x ==\n  && 1", where="w")


@pytest.mark.parametrize("source", ["", "a = 1", "foo(", "'unterminated", "1 +* 2"])
def test_invalid_expressions_raise(source: str) -> None:
    with pytest.raises(ExpressionError, match=r"^w: invalid CEL expression"):
        Expression.compile(source, where="w")


def test_expression_error_is_a_value_error() -> None:
    assert issubclass(ExpressionError, ValueError)


# --- matching --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.data.plan == 'pro'", True),
        ("event.data.plan == 'free'", False),
        ('event.data.plan == "pro" && event.data.count >= 3', True),
        ("event.data.amount > 100", True),  # double vs int literal
        ("event.data.amount > 200", False),
        ("event.data.count > 2.5", True),  # int vs double literal
        ("event.data.count == 3.0", True),
        ("3.0 == event.data.count", True),
        ("event.data.count != 3.0", False),
        ("event.data.count < 2.5", False),
        ("'a' in event.data.tags", True),
        ("'z' in event.data.tags", False),
        ("has(event.data.plan)", True),
        ("has(event.data.nope)", False),
        ("event.data.user_id.startsWith('u_')", True),
        ("size(event.data.tags) == 2", True),
        ("event.data.nested.a.b[1].c == null", True),
        ("event.data.flag", True),
        ("event.data.flag == 1", False),  # bool is not a number
        ("event.data.flag != 1", True),
    ],
)
def test_matches(source: str, expected: bool) -> None:
    assert matches(source, event=EVENT) is expected


@pytest.mark.parametrize(
    "source",
    [
        "event.data.nope == 1",  # missing field
        "event.data.plan > 1",  # type mismatch
        "event.data.count / 0 == 1",  # division by zero
        "unknown == 1",  # unbound name
        "event.data.plan.matches('[')",  # bad regex
    ],
)
def test_evaluation_errors_do_not_match(source: str) -> None:
    assert matches(source, event=EVENT) is False


@pytest.mark.parametrize("source", ["event.data.plan", "event.data.count", "null", "[true]"])
def test_non_bool_results_do_not_match(source: str) -> None:
    assert matches(source, event=EVENT) is False


def test_short_circuit_skips_errors() -> None:
    assert matches("event.data.nope == 1 || event.data.count == 3", event=EVENT) is True


def test_async_binds_through_keyword_or_mapping() -> None:
    expr = Expression.compile("async.data.user_id == event.data.user_id", where="w")
    incoming = {"data": {"user_id": "u_1"}}
    assert expr.matches(event=EVENT, async_=incoming) is True
    assert expr.matches_vars({"event": EVENT, "async": incoming}) is True
    assert expr.matches_vars({"event": EVENT, "async": {"data": {"user_id": "u_2"}}}) is False


def test_decimal_and_tuple_values_bind() -> None:
    event = {"data": {"price": Decimal("12.5"), "qty": Decimal("2"), "ids": (1, 2)}}
    assert matches("event.data.price > 12 && event.data.qty == 2", event=event) is True
    assert matches("2 in event.data.ids", event=event) is True


def test_non_json_value_raises_type_error() -> None:
    with pytest.raises(TypeError, match="set"):
        matches("event == null", event={1, 2})


def test_expression_is_reusable() -> None:
    expr = Expression.compile("event.data.plan == 'pro'", where="w")
    assert [expr.matches(event={"data": {"plan": p}}) for p in ("pro", "free", "pro")] == [
        True,
        False,
        True,
    ]


# --- interpolate -----------------------------------------------------------------------


def test_interpolate_string() -> None:
    out = interpolate("event.data.user_id == async.data.user_id", {"event": EVENT})
    assert out == '"u_1" == async.data.user_id'


def test_interpolate_string_with_quotes_backslashes_and_newline() -> None:
    out = interpolate("async.q == event.data.quote", {"event": EVENT})
    assert out == 'async.q == "he said \\"hi\\" \\\\ it\'s\\nnext"'
    expr = Expression.compile(out, where="w")
    assert expr.matches(async_={"q": EVENT["data"]["quote"]}) is True
    assert expr.matches(async_={"q": "he said hi"}) is False


def test_interpolate_scalars() -> None:
    source = "[event.data.count, event.data.amount, event.data.flag, event.data.negative]"
    assert interpolate(source, {"event": EVENT}) == "[3, 150.5, true, (-5)]"


def test_interpolate_nested_map_and_list() -> None:
    out = interpolate("event.data.nested == async.n", {"event": EVENT})
    assert out == '{"a": {"b": [1, {"c": null}]}} == async.n'
    expr = Expression.compile(out, where="w")
    assert expr.matches(async_={"n": {"a": {"b": [1, {"c": None}]}}}) is True
    assert expr.matches(async_={"n": {"a": {"b": [2]}}}) is False


def test_interpolate_missing_path_is_null() -> None:
    bindings = {"event": EVENT}
    assert interpolate("event.data.nope == async.x", bindings) == "null == async.x"
    assert interpolate("event.data.plan.deeper == 1", bindings) == "null == 1"


def test_interpolate_has() -> None:
    out = interpolate("has(event.data.plan) && !has(event.data.nope)", {"event": EVENT})
    assert out == "true && !false"


def test_interpolate_keeps_method_calls_and_indexing() -> None:
    source = 'event.data.user_id.startsWith("u") && event.data.tags[0] == async.t'
    out = interpolate(source, {"event": EVENT})
    assert out == '"u_1".startsWith("u") && ["a", "b"][0] == async.t'
    assert Expression.compile(out, where="w").matches(async_={"t": "a"}) is True


def test_interpolate_leaves_strings_comments_and_other_names() -> None:
    source = (
        "'event.data.plan' == \"event.data.plan\" && async.event.data == myevent.data"
        " // event.data.plan\n&& event.data.count == 3"
    )
    out = interpolate(source, {"event": EVENT})
    assert out == (
        "'event.data.plan' == \"event.data.plan\" && async.event.data == myevent.data"
        " // event.data.plan\n&& 3 == 3"
    )


def test_interpolate_whole_binding() -> None:
    out = interpolate("event == async", {"event": {"a": [1, "x"]}})
    assert out == '{"a": [1, "x"]} == async'


def test_interpolated_match_expression_end_to_end() -> None:
    frozen = interpolate(match_expression("data.user_id"), {"event": EVENT})
    expr = Expression.compile(frozen, where="wait_for_event")
    assert expr.matches(async_={"data": {"user_id": "u_1"}}) is True
    assert expr.matches(async_={"data": {"user_id": "u_2"}}) is False
    assert expr.matches(async_={"data": {}}) is False


# --- match_expression ------------------------------------------------------------------


def test_match_expression() -> None:
    assert match_expression("data.user_id") == "event.data.user_id == async.data.user_id"
    assert match_expression("id") == "event.id == async.id"


@pytest.mark.parametrize("field", ["", "data..x", "data.x-y", "1data", "data.id == 1", ".data"])
def test_match_expression_rejects_non_paths(field: str) -> None:
    with pytest.raises(ExpressionError, match="must be a dotted path of identifiers"):
        match_expression(field)


# --- the value index of waiters ------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "term"),
    [
        ('"ord_1" == async.data.order_id', ("data.order_id", '"ord_1"')),
        ("async.data.n == (-3) && async.x > 1", ("data.n", "-3")),
        ("async.x > 1 && (async.data.n == 2.0 && async.y)", ("data.n", "2")),
        ('async.s == "a && b || c"', ("s", '"a && b || c"')),
        ("async.ok == true", ("ok", "true")),
        ("async.x == 1 || async.y == 2", None),  # neither holds for every match
        ("!(async.x == 1)", None),
        ("async.x == 1 ? true : false", None),
        ("async.x != 1", None),
        ("async.x == null", None),
        ("async.x == 1u", None),
        ('async["x"] == 1', None),
        ("async.x == event.y", None),
        ("size(async.x) == 1", None),
        ("", None),
    ],
)
def test_index_term(source: str, term: tuple[str, str] | None) -> None:
    assert index_term(source) == term


def test_an_event_a_waiter_matches_has_the_waiters_index_key() -> None:
    # Soundness: the index may only leave out waiters an event cannot match.
    sources = ["async.v == 1", "async.v == 1.0", 'async.v == "1"', "async.v == true",
               "async.v == 1 && async.w == 2", "1 == async.v", "async.v == -0.0"]
    values: list[Any] = [1, 1.0, "1", True, False, 0, -0.0, 0.0, None, [1], {"a": 1}, 2]
    for source in sources:
        term = index_term(source)
        assert term is not None
        for v in values:
            event = {"name": "e", "v": v, "w": 2}
            if matches(source, async_=event):
                assert event_index_keys(event, [term[0]]) == [term], (source, v)


def test_index_keys_of_long_and_odd_values() -> None:
    assert index_key("x" * 300).startswith("sha256:")
    assert index_key(float("nan")) is None
    assert index_key(Decimal("3")) == index_key(3.0) == "3"
    assert event_index_keys({"data": {"a": {"b": "k"}}}, ["data.a.b", "data.z", "data.a"]) == [
        ("data.a.b", '"k"')
    ]


# --- what an evaluation converts --------------------------------------------------------


class Untouchable(dict[str, Any]):
    """A part of an event no expression here reads: converting it fails the test."""

    def items(self) -> Any:
        raise AssertionError("an unread part of the event was converted")

    def __iter__(self) -> Any:
        raise AssertionError("an unread part of the event was converted")


def _with_unread_part() -> dict[str, Any]:
    return {"name": "e", "big": Untouchable(a=1),
            "data": {"id": "x", "tags": ["a", "b"], "n": {"k": 1}, "big": Untouchable(a=1)}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("event.data.id == 'x'", True),
        ("has(event.data.id) && !has(event.data.nope) && has(event.data.big)", True),
        ("has(event.data.n.k) && !has(event.data.n.j)", True),
        ("size(event.data.tags) == 2 && event.data.tags.size() == 2", True),
        ("event.data.tags.exists(t, t == 'b') && event.data.tags[0] == 'a'", True),
        ("event.data.n == {'k': 1} && event.data.id.startsWith('x')", True),
        ("event.data.nope == 1", False),  # a missing field is still an error
        ("has(event.data.tags.x) || event.data.tags.x == 1", False),  # a list has no fields
        ("event.data.id.big == 1", False),
    ],
)
def test_an_evaluation_converts_only_the_paths_it_reads(source: str, expected: bool) -> None:
    assert matches(source, event=_with_unread_part()) is expected


def test_a_key_converts_only_its_path() -> None:
    expr = Expression.compile("event.data.n", where="w")
    assert expr.value({"event": _with_unread_part()}) == {"k": 1}


def test_reading_only_the_paths_used_gives_what_converting_everything_gives() -> None:
    from dataclasses import replace

    from runtime import _cel

    bindings = {"event": EVENT, "async": {"data": {"user_id": "u_1", "tags": ["a"]}}}
    for source in ["event.data.plan == 'pro'", "has(event.data.nested.a.b)",
                   "size(event.data.nested.a) == 1", "event.data.nested.a.b[1].c == null",
                   "event.data.tags.all(t, t in async.data.tags)", "event == async",
                   "async.data.user_id == event.data.user_id", "has(event.data.quote.x)",
                   "event.data.tags.map(t, t + 'x') == ['ax', 'bx']", "size(event) == 2"]:
        program = _cel.compile_program(source)
        whole = replace(program, reads=None)
        assert _cel.evaluate(program, bindings) == _cel.evaluate(whole, bindings), source
        assert repr(_cel.value(program, bindings)) == repr(_cel.value(whole, bindings)), source


def test_the_size_of_a_list_past_the_limit_is_measured() -> None:
    from runtime._cel import WHOLE_VALUES

    event = {"data": {"items": list(range(WHOLE_VALUES * 5))}}
    assert matches(f"size(event.data.items) == {WHOLE_VALUES * 5}", event=event) is True
    assert matches(f"event.data.items.size() == {WHOLE_VALUES * 5}", event=event) is True


def test_a_value_used_whole_past_the_limit_does_not_match() -> None:
    from runtime._cel import WHOLE_VALUES

    def event(n: int) -> dict[str, Any]:
        return {"data": {"items": list(range(n))}}

    expr = Expression.compile("event.data.items == event.data.items", where="w")
    assert expr.matches(event=event(WHOLE_VALUES - 1)) is True  # the list counts one
    assert expr.matches(event=event(WHOLE_VALUES)) is False
    with pytest.raises(LookupError, match=f"more than {WHOLE_VALUES} values whole"):
        Expression.compile("event.data.items", where="w").value({"event": event(WHOLE_VALUES)})


@pytest.mark.parametrize(
    "source",
    [
        "event.data.items.exists(i, i == 0)",
        "event.data.items.exists(i, i < 0 && i > 5 || i == -1 || string(i) == 'q' || i == 0)",
        "event.data.items.exists(x, event.data.items.exists(y, x + y == 0))",
    ],
)
def test_a_macro_binds_fewer_values_the_more_its_bodies_evaluate(source: str) -> None:
    from runtime import _cel

    program = _cel.compile_program(source)
    depth, body = _cel.macro_shape(_cel._ENV.compile(source))
    assert program.limit ** depth * body <= _cel.MACRO_NODES < (program.limit + 1) ** depth * body
    assert matches(source, event={"data": {"items": list(range(program.limit - 1))}}) is True
    assert matches(source, event={"data": {"items": list(range(program.limit))}}) is False


def test_a_macro_over_a_string_spends_one_per_character() -> None:
    from runtime._cel import WHOLE_VALUES

    source = "event.data.s.exists(c, c == 'b')"  # celpy runs the body once per character
    assert matches(source, event={"data": {"s": "ab"}}) is True
    assert matches(source, event={"data": {"s": "a" * WHOLE_VALUES + "b"}}) is False
    assert matches("event.data.s.endsWith('b')", event={"data": {"s": "a" * 10**6 + "b"}})


def test_a_value_too_deep_to_convert_is_no_match_or_a_lookup_error() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    assert matches("event.data.d == 1", event={"data": {"d": deep}}) is False
    with pytest.raises(LookupError):
        Expression.compile("event.data.d", where="w").value({"event": {"data": {"d": deep}}})


def test_a_macro_whose_body_fails_on_every_element_costs_what_its_elements_cost() -> None:
    # celpy's errors each held the one before, escaped again: 16 elements, a 1 MB message;
    # 30, out of memory.
    expr = Expression.compile("event.data.items.exists(i, i.sku == 'a')", where="w")
    items = [{"qty": 1}] * 16
    with pytest.raises(LookupError) as info:
        expr.value({"event": {"data": {"items": items}}})
    assert len(str(info.value)) < 200
    assert expr.matches(event={"data": {"items": [{"qty": 1}] * 200}}) is False
    assert matches("event.data.a.all(x, x.b == 1)", event={"data": {"a": [{}] * 200}}) is False


# --- mistakes refused at registration ----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "mistake", "column"),
    [
        ("event.data.x.y.z()", "unknown method 'z'", 16),
        ("size(event) > 'a'", "a number and a string never go together with >", 1),
        ("event.data.ok && 'a' + 1 == 2", "a string and a number never go together with +", 18),
        ("frob(event.data.x)", "unknown function 'frob'", 1),
        ("event.data.x == 1 || evnt(1)", "unknown function 'evnt'", 22),
        ("size(event.data, 1) > 0", "size() takes 1 argument, got 2", 1),
        ("event.data.s.startsWith()", ".startsWith() takes 1 argument, got 0", 14),
        ("event.data.items.exists(event.x)", ".exists() takes 2 arguments, got 1", 18),
        ("has(event)", "has() takes a field selection, e.g. has(event.data.x)", 1),
        ("'a' in 'abc'", "'in' needs a list or a map on its right, not a string", 1),
        ("!size(event.data.items)", "! does not apply to a number", 1),
        ("[1] < [2]", "< does not apply to a list", 1),
    ],
)
def test_registration_refuses_what_no_event_makes_right(
    source: str, mistake: str, column: int
) -> None:
    with pytest.raises(ExpressionError) as info:
        Expression.check_names(source, ("event",), where="function 'f' trigger 'e' if")
    assert str(info.value) == (
        f"function 'f' trigger 'e' if: invalid CEL expression {source!r}: {mistake} at line 1,"
        f" column {column}:\n{source}\n{' ' * (column - 1)}^"
    )


def test_a_mistake_on_a_later_line_is_shown_there() -> None:
    shown = r"at line 2, column 12:\n&& event.x.y\(\)\n           \^$"
    with pytest.raises(ExpressionError, match=shown):
        Expression.check_names("event.a == 1\n&& event.x.y()", ("event",), where="w")


@pytest.mark.parametrize(
    "source",
    [
        "event.data.x == null && event.data.count > 2.5 && int(event.data.s) + 1 == 2",
        "timestamp(event.ts) + duration('1h') > timestamp('2020-01-01T00:00:00Z')",
        "event.data.items.exists(i, i.id == 1) && event.data.items.map(i, i.n).size() > 0",
        "dyn(event.data.x) == 1 && event.data.s.matches('^a') && matches(event.data.s, 'a')",
        "event.data.tags.all(t, t.startsWith('a')) && 'a' in event.data.tags",
        "true == event.data.flag && size('abc') == 3 && -event.data.n < 0 && !event.data.ok",
        "event.data.x ==",  # a syntax error is left to compile(), which shows celpy's caret
    ],
)
def test_registration_keeps_what_an_event_can_make_right(source: str) -> None:
    Expression.check_names(source, ("event",), where="w")


def test_a_deployed_app_checks_no_calls_or_types() -> None:
    from runtime.checks import checked_at_deploy

    with checked_at_deploy():
        Expression.check_names("event.x.y.z()", ("event",), where="w")


def test_an_app_refuses_such_a_trigger_filter_or_key_when_registering() -> None:
    from pydantic import ValidationError

    from runtime import App, Concurrency, ConfigurationError, TriggerEvent

    app = App("shop")
    with pytest.raises(ConfigurationError, match=r"'event.data.x.y.z\(\)': unknown method 'z'"):
        app.function(id="f", trigger=TriggerEvent("a/b", if_="event.data.x.y.z()"))(print)
    with pytest.raises(ValidationError, match=r"a number and a string never go together"):
        Concurrency(limit=1, key="size(event.data) > 'a'")
