"""Reading SQL text without a database: normalise it and find the tables it reads.

Flink SQL and DuckDB SQL share the shapes that matter here: ``FROM t``, ``JOIN t``,
``TABLE t`` inside window TVFs (``TUMBLE(TABLE t, ...)``), comma joins, CTEs. A small
tokenizer is enough and tolerates dialect features a full parser would reject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<line_comment>--[^\n]*)
  | (?P<block_comment>/\*.*?\*/)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>`(?:[^`]|``)*`|"(?:[^"]|"")*")
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>\d+(?:\.\d*)?)
  | (?P<param>\$\{[^}]*\})
  | (?P<op><>|<=|>=|!=|\|\||::|[^\sA-Za-z0-9_])
    """,
    re.VERBOSE | re.DOTALL,
)

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str

    @property
    def upper(self) -> str:
        return self.text.upper() if self.kind == "word" else self.text


def tokenize(sql: str) -> list[Token]:
    """Tokens of ``sql`` without whitespace and comments."""
    return list(_tokens(sql))


@lru_cache(maxsize=4096)
def _tokens(sql: str) -> tuple[Token, ...]:
    skip = ("ws", "line_comment", "block_comment")
    return tuple(
        Token(m.lastgroup or "op", m.group())
        for m in _TOKEN.finditer(sql)
        if m.lastgroup not in skip
    )


@lru_cache(maxsize=4096)
def normalize_sql(sql: str) -> str:
    """Canonical text: comments dropped, whitespace collapsed, keywords upper-cased,
    trailing semicolons removed. Identifiers and literals keep their case."""
    parts: list[str] = []
    for tok in tokenize(sql):
        text = tok.text
        if tok.kind == "word" and tok.upper in _KEYWORDS:
            text = tok.upper
        parts.append(text)
    while parts and parts[-1] == ";":
        parts.pop()
    return " ".join(parts)


_KEYWORDS = frozenset(
    """SELECT FROM WHERE GROUP BY ORDER HAVING JOIN LEFT RIGHT FULL INNER OUTER CROSS ON AS
    AND OR NOT IN IS NULL BETWEEN LIKE CASE WHEN THEN ELSE END UNION ALL DISTINCT WITH
    INTERVAL TABLE DESCRIPTOR TUMBLE HOP CUMULATE SESSION WINDOW OVER PARTITION ROWS RANGE
    LATERAL UNNEST CAST TRUE FALSE LIMIT OFFSET FOR SYSTEM_TIME OF VALUES INSERT INTO
    SECOND MINUTE HOUR DAY MONTH YEAR ASOF USING EXCEPT INTERSECT COUNT SUM AVG MIN MAX
    PRECEDING FOLLOWING CURRENT ROW UNBOUNDED ASC DESC NULLS FIRST LAST EXISTS ANY""".split()
)

# After one of these, a comma in a FROM list does not introduce another table.
_CLAUSE_END = frozenset(
    "WHERE GROUP ORDER HAVING LIMIT UNION EXCEPT INTERSECT WINDOW ON USING SELECT QUALIFY".split()
)


def _unquote(tok: Token) -> str:
    if tok.kind == "quoted":
        q = tok.text[0]
        return tok.text[1:-1].replace(q + q, q)
    return tok.text


def table_references(sql: str) -> list[str]:
    """Names of the tables ``sql`` reads, in order of appearance, without CTE names.

    A dotted name (``catalog.db.t``) is reported by its last part.
    """
    return list(_table_references(sql))


@lru_cache(maxsize=4096)
def _table_references(sql: str) -> tuple[str, ...]:
    toks = _tokens(sql)
    ctes: set[str] = set()
    refs: list[str] = []
    # CTE names: WITH name AS ( ... ), name AS ( ... )
    for i, tok in enumerate(toks):
        if (
            tok.kind in ("word", "quoted")
            and i + 2 < len(toks)
            and toks[i + 1].upper == "AS"
            and toks[i + 2].text == "("
            and i > 0
            and (toks[i - 1].upper == "WITH" or toks[i - 1].text == ",")
        ):
            ctes.add(_unquote(tok))

    def read_name(j: int) -> tuple[str | None, int]:
        if j >= len(toks) or toks[j].kind not in ("word", "quoted"):
            return None, j
        if toks[j].kind == "word" and toks[j].upper in _KEYWORDS and toks[j].upper not in (
            "TABLE",
        ):
            # FROM (SELECT ...), FROM LATERAL ..., FROM UNNEST(...): not a table name
            return None, j
        name = _unquote(toks[j])
        j += 1
        while j + 1 < len(toks) and toks[j].text == "." and toks[j + 1].kind in ("word", "quoted"):
            name = _unquote(toks[j + 1])
            j += 2
        return name, j

    depth_of_from: list[int] = []  # paren depths at which a FROM list is open
    depth = 0
    i = 0
    while i < len(toks):
        tok = toks[i]
        up = tok.upper
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
            while depth_of_from and depth_of_from[-1] > depth:
                depth_of_from.pop()
        elif tok.kind == "word" and up in ("FROM", "JOIN", "TABLE"):
            if up == "TABLE" and i > 0 and toks[i - 1].upper in ("CREATE", "DROP", "ALTER"):
                i += 1
                continue
            name, j = read_name(i + 1)
            if name is not None and j < len(toks) and toks[j].text == "(" and up != "TABLE":
                name = None  # a table function call FROM f(...)
            if name is not None:
                refs.append(name)
            if up == "FROM":
                depth_of_from = [d for d in depth_of_from if d < depth] + [depth]
        elif tok.text == "," and depth_of_from and depth_of_from[-1] == depth:
            name, j = read_name(i + 1)
            if name is not None and not (j < len(toks) and toks[j].text == "("):
                refs.append(name)
        elif tok.kind == "word" and up in _CLAUSE_END and depth_of_from and (
            depth_of_from[-1] == depth
        ):
            depth_of_from.pop()
        i += 1
    seen: set[str] = set()
    ordered: list[str] = []
    for name in refs:
        if name not in ctes and name not in seen:
            seen.add(name)
            ordered.append(name)
    return tuple(ordered)


def placeholders(text: str) -> list[str]:
    """``${name}`` parameter placeholders in ``text``, in order, without repeats."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def substitute(text: str, params: dict[str, str]) -> str:
    """Replace ``${name}`` placeholders by parameter values (missing names are kept)."""
    return PLACEHOLDER.sub(lambda m: str(params.get(m.group(1), m.group(0))), text)


_GROUP_END = frozenset("HAVING ORDER LIMIT UNION EXCEPT INTERSECT WINDOW QUALIFY OFFSET".split())


def group_by_columns(sql: str) -> list[str] | None:
    """The columns the outermost query groups by (``GROUP BY a, t.b`` → ``["a", "b"]``);
    None when it does not group, or groups by anything but plain columns."""
    toks = _tokens(sql)
    depth = 0
    start = None
    for i, tok in enumerate(toks):
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
        elif depth == 0 and tok.upper == "GROUP" and i + 1 < len(toks) and \
                toks[i + 1].upper == "BY":
            start = i + 2
    if start is None:
        return None
    names: list[str] = []
    current: list[Token] = []
    depth = 0
    for tok in (*toks[start:], Token("op", ",")):
        if depth == 0 and (tok.text in (",", ";", ")") or tok.upper in _GROUP_END):
            if len(current) == 1 and current[0].kind in ("word", "quoted"):
                names.append(_unquote(current[0]))
            elif (len(current) == 3 and current[1].text == "."
                  and current[2].kind in ("word", "quoted")):
                names.append(_unquote(current[2]))
            else:
                return None
            current = []
            if tok.text != ",":
                break
            continue
        if tok.text == "(":
            depth += 1
        elif tok.text == ")":
            depth -= 1
        current.append(tok)
    return names or None
