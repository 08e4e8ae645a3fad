"""Flink SQL data types, checked when a resource is defined (no JVM needed).

:func:`type_problem` reads a column type the way Flink's parser would (``STRING``,
``DECIMAL(10, 2)``, ``TIMESTAMP(3) WITH LOCAL TIME ZONE``, ``ARRAY<INT>``, ``INT ARRAY``,
``MAP<STRING, BIGINT>``, ``ROW<a INT, b STRING>``, ``... NOT NULL``) and says what is wrong
with one that it would refuse, so ``NOTATYPE`` fails at definition instead of at the run.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<str>'(?:[^']|'')*')"
                    r"|(?P<quoted>`(?:[^`]|``)+`)|(?P<sym>[(),<>]))")

#: Types without arguments.
_PLAIN = {"STRING", "BOOLEAN", "BYTES", "TINYINT", "SMALLINT", "INT", "INTEGER", "BIGINT",
          "FLOAT", "REAL", "DATE", "NULL", "VARIANT"}
#: Types with an optional length or precision.
_SIZED = {"CHAR", "VARCHAR", "BINARY", "VARBINARY", "TIME", "TIMESTAMP", "TIMESTAMP_LTZ"}
_DECIMALS = {"DECIMAL", "DEC", "NUMERIC"}
_INTERVAL_UNITS = {"YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "SECOND"}
_KNOWN = sorted(_PLAIN | _SIZED | _DECIMALS | {"DOUBLE", "CHARACTER", "INTERVAL", "ARRAY",
                                               "MULTISET", "MAP", "ROW", "RAW"})


class _Bad(Exception):
    pass


class _Reader:
    def __init__(self, text: str):
        self.tokens: list[str] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise _Bad(f"unexpected {text[pos:].strip()[:10]!r}")
            self.tokens.append(m.group(m.lastgroup or "sym"))
            pos = m.end()
        self.i = 0

    def peek(self, offset: int = 0) -> str:
        j = self.i + offset
        return self.tokens[j].upper() if j < len(self.tokens) else ""

    def take(self, *expected: str) -> str:
        token = self.peek()
        if expected and token not in expected:
            raise _Bad(f"expected {' or '.join(expected)}, found {token or 'the end'}")
        if not token:
            raise _Bad("unexpected end")
        self.i += 1
        return self.tokens[self.i - 1]

    def accept(self, *words: str) -> bool:
        if self.peek() in words:
            self.i += 1
            return True
        return False

    def number(self) -> None:
        if not self.take().isdigit():
            raise _Bad("expected a number")

    def args(self, most: int) -> None:
        """An optional ``(n)`` or ``(n, m)``."""
        if self.accept("("):
            self.number()
            for _ in range(most - 1):
                if not self.accept(","):
                    break
                self.number()
            self.take(")")

    def data_type(self) -> None:
        self.base()
        while self.peek() in ("ARRAY", "MULTISET"):  # postfix collections: INT ARRAY
            self.i += 1
        if self.accept("NOT"):
            self.take("NULL")
        else:
            self.accept("NULL")

    def base(self) -> None:
        word = self.take().upper()
        if word in _PLAIN:
            return
        if word == "DOUBLE":
            self.accept("PRECISION")
        elif word == "CHARACTER":
            self.accept("VARYING")
            self.args(1)
        elif word in _DECIMALS:
            self.args(2)
        elif word in _SIZED:
            self.args(1)
            if word in ("TIME", "TIMESTAMP"):
                self._zone(local=word == "TIMESTAMP")
        elif word == "INTERVAL":
            self._interval()
        elif word in ("ARRAY", "MULTISET"):
            self.take("<")
            self.data_type()
            self.take(">")
        elif word == "MAP":
            self.take("<")
            self.data_type()
            self.take(",")
            self.data_type()
            self.take(">")
        elif word == "ROW":
            self._row()
        elif word == "RAW":
            self.take("(")
            if not self.take().startswith("'"):
                raise _Bad("RAW needs a class name in quotes")
            if self.accept(","):
                self.take()
            self.take(")")
        else:
            raise _Bad(f"{word} is not a Flink SQL type")

    def _zone(self, *, local: bool) -> None:
        if self.accept("WITHOUT"):
            self.take("TIME")
            self.take("ZONE")
        elif self.accept("WITH"):
            if local:
                self.accept("LOCAL")
            self.take("TIME")
            self.take("ZONE")

    def _interval(self) -> None:
        self.take(*_INTERVAL_UNITS)
        self.args(1)
        if self.accept("TO"):
            self.take(*_INTERVAL_UNITS)
            self.args(1)

    def _row(self) -> None:
        close = {"<": ">", "(": ")"}[self.take("<", "(")]
        if self.accept(close):
            return
        while True:
            name = self.take()
            if name in "(),<>":
                raise _Bad("expected a field name")
            self.data_type()
            if self.peek().startswith("'"):  # a field description
                self.i += 1
            if self.accept(close):
                return
            self.take(",")


def type_problem(text: str) -> str | None:
    """What is wrong with the Flink SQL type ``text`` (None when Flink can read it)."""
    try:
        reader = _Reader(text)
        if not reader.tokens:
            return "no type given"
        reader.data_type()
        if reader.peek():
            raise _Bad(f"unexpected {reader.tokens[reader.i]!r} after the type")
    except _Bad as exc:
        return str(exc)
    return None


def known_types() -> list[str]:
    """The type names :func:`type_problem` knows (for messages)."""
    return list(_KNOWN)


def is_local_zoned(text: str) -> bool:
    """Is the Flink SQL type ``text`` an instant (``TIMESTAMP_LTZ(3)``, ``TIMESTAMP(3) WITH
    LOCAL TIME ZONE``), not a wall clock (``TIMESTAMP(3)``)? Attributes such as
    ``*ROWTIME*`` and ``NOT NULL`` do not matter."""
    upper = text.upper()
    return upper.lstrip().startswith("TIMESTAMP") and ("LTZ" in upper
                                                       or "LOCAL TIME ZONE" in upper)
