"""Search filters (AIP-160), parsed once into a typed tree; store/search.py compiles the
tree to parameterised SQL.

    labels.team = "vision" AND (metrics.accuracy >= 0.9 OR NOT state = ARCHIVED)

A small hand-written recursive-descent parser rather than a grammar library: the
language is a dozen tokens and four precedence levels, the errors must name the
character position and the offending token (which a parser we write reports exactly),
and the tree it builds is typed by field, so a type error (`metrics.acc > "high"`) is
found here, before any SQL exists.

**Grammar** (AIP-160's subset): `expr := and (OR and)*`, `and := unary ((AND)? unary)*`
(juxtaposition is AND), `unary := (NOT | -) unary | "(" expr ")" | field op value`,
`op := = != < <= > >= :`. Values are double-quoted strings (`\\"` and `\\\\` escapes),
numbers, bare words (`READY`, `vision`) or `*` (presence, with `:` only). Keywords are
upper case, as AIP-160 has them.

**Fields** (`FIELDS`): `name` (the model's id), `namespace`, `number`, `state`,
`run_id`, `create_time`, `update_time` (RFC 3339 strings), `tags` (`tags:"x"`, membership),
`labels.<key>` and `params.<key>` (strings), `metrics.<key>` (numbers), `alias`
(`alias:*` has any alias, `alias = production` has that one), `dataset` (`=` or `:` a
digest or a URI: the version was trained or evaluated on such a dataset, through
lineage). A key with other characters is quoted: `labels."team/owner" = x`. ListModels
takes a model's fields (`MODEL_FIELDS`): `name`, `namespace`, `create_time`,
`update_time`, `tags`, `labels.<key>`, and `alias` (any version of the model has it).

**Meaning.** Every comparison is true or false, never unknown: a comparison on a missing
key is false, and NOT of it true (`NOT labels.team = x` matches a version without the
label). `:` on a map key is presence (`labels.team:*`) or equality (`labels.team:x`).
`params.<key>` compares as a string against a string and as a number against a number,
and a param that is not a plain decimal (`0.1`, `-2`, `1e-3`; not `NaN`, `inf` or
padded) compares false against a number. Strings compare by
code point (the database's "C" order).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.types import VersionState

MAX_FILTER = 4096  # characters
MAX_DEPTH = 32  # nesting of parentheses and NOT
MAX_TERMS = 64  # comparisons in one filter


class Op(Enum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    HAS = ":"


class Kind(Enum):
    """How a field's values compare."""

    TEXT = "text"  # name, namespace, run_id
    NUMBER = "number"  # number
    STATE = "state"
    TIME = "time"
    TAGS = "tags"
    LABEL = "label"  # labels.<key>
    PARAM = "param"  # params.<key>
    METRIC = "metric"  # metrics.<key>
    ALIAS = "alias"
    DATASET = "dataset"


FIELDS = {
    "name": Kind.TEXT,
    "namespace": Kind.TEXT,
    "run_id": Kind.TEXT,
    "number": Kind.NUMBER,
    "state": Kind.STATE,
    "create_time": Kind.TIME,
    "update_time": Kind.TIME,
    "tags": Kind.TAGS,
    "alias": Kind.ALIAS,
    "dataset": Kind.DATASET,
}
MAPS = {"labels": Kind.LABEL, "params": Kind.PARAM, "metrics": Kind.METRIC}
# ListModels' filter: the model's own fields, and `alias` (the model has an alias, or
# that one, on any of its versions)
MODEL_FIELDS = {f: FIELDS[f] for f in
                ("name", "namespace", "create_time", "update_time", "tags", "alias")}  # fmt: skip
MODEL_MAPS = {"labels": Kind.LABEL}
ORDERED = frozenset({Op.LT, Op.LE, Op.GT, Op.GE})


Value = str | float | datetime | VersionState


@dataclass(frozen=True, slots=True)
class Compare:
    """`field op value`; `key` for map fields, `value` typed by the field (None: `*`)."""

    kind: Kind
    field: str
    key: str | None
    op: Op
    value: Value | None


@dataclass(frozen=True, slots=True)
class Not:
    term: Filter


@dataclass(frozen=True, slots=True)
class And:
    terms: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    terms: tuple[Filter, ...]


Filter = Compare | Not | And | Or


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # STRING NUMBER WORD OP LPAREN RPAREN STAR MINUS END
    text: str
    position: int
    value: str | float | None = None


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<STRING>"(?:[^"\\]|\\.)*")
    | (?P<NUMBER>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.]))
    | (?P<OP><=|>=|!=|=|<|>|:)
    | (?P<LPAREN>\()
    | (?P<RPAREN>\))
    | (?P<STAR>\*)
    | (?P<MINUS>-)
    | (?P<DOT>\.)
    | (?P<WORD>[^\s"()=!<>:*.\\-][^\s"()=!<>:*.\\]*)
    )""",
    re.VERBOSE,
)


def bad(position: int, message: str) -> InvalidArgument:
    """INVALID_ARGUMENT on `filter`, naming the character position (0 is the first)."""
    error = InvalidArgument.field("filter", f"at position {position}: {message}")
    error.metadata["position"] = str(position)
    return error


def tokenize(text: str) -> list[Token]:
    """The tokens of a filter, each with its position; the last is END."""
    if len(text) > MAX_FILTER:
        raise bad(MAX_FILTER, f"a filter has at most {MAX_FILTER} characters")
    tokens: list[Token] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            tokens.append(Token("END", "", len(text)))
            return tokens
        match = _TOKEN.match(text, at)
        if match is None or match.lastgroup is None:
            quote = text[at] == '"'
            raise bad(at, "unterminated string" if quote else f"unexpected {text[at]!r}")
        kind = match.lastgroup
        raw = match.group(kind)
        start = match.start(kind)
        tokens.append(Token(kind, raw, start, _value(kind, raw, start)))
        at = match.end()


def _value(kind: str, raw: str, position: int) -> str | float | None:
    if kind == "STRING":
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    if kind == "NUMBER":
        number = float(raw)
        if not math.isfinite(number):
            raise bad(position, f"{raw} is not a finite number")
        return number
    return raw if kind == "WORD" else None


def parse(
    text: str, fields: dict[str, Kind] = FIELDS, maps: dict[str, Kind] = MAPS
) -> Filter | None:
    """The tree of a filter over `fields` and `maps` (a version's by default, a model's
    with MODEL_FIELDS and MODEL_MAPS); None for an empty one (everything matches)."""
    if not text.strip():
        return None
    return _Parser(tokenize(text), fields, maps).parse()


class _Parser:
    def __init__(self, tokens: list[Token], fields: dict[str, Kind], maps: dict[str, Kind]) -> None:
        self._tokens = tokens
        self._fields = fields
        self._maps = maps
        self._at = 0
        self._depth = 0
        self._terms = 0

    def parse(self) -> Filter:
        tree = self._or()
        end = self._peek()
        if end.kind != "END":
            raise bad(end.position, f"unexpected {end.text!r}; expected AND, OR or the end")
        return tree

    def _peek(self) -> Token:
        return self._tokens[self._at]

    def _take(self) -> Token:
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token.kind == "WORD" and token.text == word:
            self._at += 1
            return True
        return False

    def _or(self) -> Filter:
        terms = [self._and()]
        while self._keyword("OR"):
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def _and(self) -> Filter:
        terms = [self._unary()]
        while True:
            if self._keyword("AND"):
                terms.append(self._unary())
                continue
            token = self._peek()
            if token.kind in ("END", "RPAREN") or (token.kind == "WORD" and token.text == "OR"):
                break
            terms.append(self._unary())  # juxtaposition is AND
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def _unary(self) -> Filter:
        token = self._peek()
        if token.kind == "MINUS" or (token.kind == "WORD" and token.text == "NOT"):
            self._take()
            with self._nested(token):
                return Not(self._unary())
        if token.kind == "LPAREN":
            self._take()
            with self._nested(token):
                tree = self._or()
            closing = self._take()
            if closing.kind != "RPAREN":
                raise bad(closing.position, f"expected ')' to close the '(' at {token.position}")
            return tree
        return self._comparison()

    def _nested(self, token: Token) -> _Depth:
        return _Depth(self, token)

    def _comparison(self) -> Compare:
        start = self._peek()
        kind, field, key = self._field()
        op_token = self._take()
        if op_token.kind != "OP":
            raise bad(op_token.position, f"expected an operator after {field!r}, got "
                      f"{op_token.text or 'the end'!r}")  # fmt: skip
        op = Op(op_token.text)
        value_token = self._take()
        self._terms += 1
        if self._terms > MAX_TERMS:
            raise bad(start.position, f"a filter has at most {MAX_TERMS} comparisons")
        return _typed(kind, field, key, (op, op_token.position), value_token)

    def _field(self) -> tuple[Kind, str, str | None]:
        token = self._take()
        if token.kind != "WORD" or token.text in ("AND", "OR", "NOT"):
            raise bad(token.position, f"expected a field, got {token.text or 'the end'!r}")
        if token.text in self._maps:
            dot = self._take()
            if dot.kind != "DOT":
                raise bad(dot.position, f"{token.text} needs a key: {token.text}.<key>")
            key = self._take()
            if key.kind not in ("WORD", "STRING") or not key.value:
                raise bad(key.position, f"expected a key after '{token.text}.'")
            return self._maps[token.text], token.text, str(key.value)
        kind = self._fields.get(token.text)
        if kind is None:
            known = ", ".join([*self._fields, *(f"{m}.<key>" for m in self._maps)])
            raise bad(token.position, f"unknown field {token.text!r}; fields: {known}")
        return kind, token.text, None


class _Depth:
    def __init__(self, parser: _Parser, token: Token) -> None:
        self._parser = parser
        self._token = token

    def __enter__(self) -> None:
        self._parser._depth += 1
        if self._parser._depth > MAX_DEPTH:
            raise bad(self._token.position, f"nested more than {MAX_DEPTH} deep")

    def __exit__(self, *exc: object) -> None:
        self._parser._depth -= 1


def _typed(
    kind: Kind, field: str, key: str | None, operator: tuple[Op, int], token: Token
) -> Compare:
    """The comparison with its value converted for the field, or INVALID_ARGUMENT
    (naming the operator's position when the operator is what the field refuses)."""
    op, op_at = operator
    if token.kind == "STAR":
        if op is not Op.HAS or kind not in (Kind.LABEL, Kind.PARAM, Kind.METRIC, Kind.ALIAS):
            raise bad(token.position, f"'*' means presence: only {field}{'.' + key if key else ''}"
                      ":* on labels, params, metrics and alias")  # fmt: skip
        return Compare(kind, field, key, op, None)
    if token.kind not in ("STRING", "NUMBER", "WORD"):
        shown = token.text or "the end"
        raise bad(token.position, f"expected a value after {op.value!r}, got {shown!r}")
    _check_operator(kind, field, op, op_at)
    shown = f"{field}.{key}" if key else field
    return Compare(kind, field, key, op, _converted(kind, shown, op, token))


def _check_operator(kind: Kind, field: str, op: Op, at: int) -> None:
    if op is Op.HAS and kind not in (Kind.TAGS, Kind.LABEL, Kind.PARAM, Kind.ALIAS, Kind.DATASET):
        raise bad(at, f"':' is for tags, labels, params, alias and dataset, not {field}")
    if kind is Kind.TAGS and op is not Op.HAS:
        raise bad(at, f'tags take ":" only, not {op.value!r}: tags:"x" matches versions tagged x')
    if kind is Kind.ALIAS and op not in (Op.EQ, Op.HAS):
        raise bad(at, f"alias takes '=' or ':', not {op.value!r} (alias:* has any alias)")
    if kind is Kind.DATASET and op not in (Op.EQ, Op.HAS):
        raise bad(at, f"dataset takes '=' or ':' (a digest or a URI), not {op.value!r}")
    if kind is Kind.STATE and op not in (Op.EQ, Op.NE):
        raise bad(at, f"state takes '=' or '!=', not {op.value!r}")


def _converted(
    kind: Kind, field: str, op: Op, token: Token
) -> str | float | datetime | VersionState:
    if kind in (Kind.NUMBER, Kind.METRIC):
        if token.kind != "NUMBER":
            raise bad(token.position, f"{field} is a number; {token.text!r} is not")
        number = float(token.value)  # type: ignore[arg-type]
        if kind is Kind.NUMBER and not number.is_integer():
            raise bad(token.position, f"number is an integer; {token.text!r} is not")
        return number
    if kind is Kind.STATE:
        return _state(token)
    if kind is Kind.TIME:
        return _time(token)
    if kind is Kind.PARAM and token.kind == "NUMBER":
        return float(token.value)  # type: ignore[arg-type]
    return token.text if token.kind == "NUMBER" else str(token.value)


def _state(token: Token) -> VersionState:
    text = str(token.value).upper().removeprefix("MODEL_VERSION_STATE_")
    try:
        return VersionState[text]
    except KeyError:
        names = ", ".join(s.name for s in VersionState)
        raise bad(token.position, f"{token.text!r} is not a state; states: {names}") from None


def _time(token: Token) -> datetime:
    if token.kind != "STRING":
        raise bad(token.position, 'a time is an RFC 3339 string: "2026-12-04T10:00:00Z"')
    try:
        parsed = datetime.fromisoformat(str(token.value))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise bad(token.position, f"{token.text} is not an RFC 3339 time with a zone")
    return parsed


def fingerprint(tree: Filter | None) -> str:
    """A canonical text of the tree, for page tokens (the same filter, however spelled)."""
    return "" if tree is None else repr(tree)
