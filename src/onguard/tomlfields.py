"""Typed reads from parsed TOML tables, with errors that name the file and the field and suggest a fix."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from onguard.errors import InputError
from onguard.units import parse_duration

T = TypeVar("T")
_MISSING = object()


def read_toml(path: Path, error: type[InputError]) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise error("file not found", file=str(path), hint="check the path, or create the file") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise error(f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at line {line})", file=str(path),
                    hint="TOML files are UTF-8: save it again as UTF-8 (e.g. `iconv -t UTF-8`)") from None
    except OSError as exc:  # a folder named *.toml, no permission to read, an I/O error
        raise error(f"cannot read the file ({exc.strerror or exc})", file=str(path),
                    hint="check that it is a regular file this user can read") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"not valid TOML ({exc})", file=str(path),
                    hint="fix the syntax at the line and column given") from None


class Table:
    """A TOML table being read field by field; `finish()` rejects fields nobody asked for (typos)."""

    def __init__(self, data: dict[str, Any], *, file: str, prefix: str, error: type[InputError]) -> None:
        self._data = data
        self._file = file
        self._prefix = prefix
        self._error = error
        self._seen: set[str] = set()

    @property
    def file(self) -> str:
        return self._file

    def field_name(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def fail(self, key: str, message: str, hint: str | None = None) -> InputError:
        return self._error(message, file=self._file, field=self.field_name(key), hint=hint)

    def has(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def _missing(self, key: str, hint: str | None) -> InputError:
        typo = difflib.get_close_matches(key, [k for k in self._data if k not in self._seen], n=1)
        if typo:
            return self.fail(key, "is required but missing", f"found '{typo[0]}': did you mean '{key}'?")
        return self.fail(key, "is required but missing", hint)

    def get(self, key: str, kind: type[T] | tuple[type, ...], *, default: Any = _MISSING,
            hint: str | None = None) -> T:
        self._seen.add(key)
        if key not in self._data:
            if default is _MISSING:
                raise self._missing(key, hint)
            return default
        value = self._data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_names(kinds)}, got a boolean", hint)
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_names(kinds)}, got {type(value).__name__} {value!r}", hint)
        return value

    def parsed(self, key: str, parse: Callable[[Any], T], *, default: Any = _MISSING,
               hint: str | None = None) -> T:
        self._seen.add(key)
        if key not in self._data:
            if default is _MISSING:
                raise self._missing(key, hint)
            return default
        try:
            return parse(self._data[key])
        except ValueError as exc:
            raise self.fail(key, str(exc), hint) from None

    def duration_in(self, key: str, default: float, bounds: tuple[float, float]) -> float:
        """A duration in seconds within `bounds` (inclusive): outside them it is a typo, not a tuning choice."""
        value = self.parsed(key, parse_duration, default=default)
        low, high = bounds
        if not low <= value <= high:
            raise self.fail(key, f"{value:g}s is outside {seconds(low)}..{seconds(high)}",
                            f"write a duration from {seconds(low)} to {seconds(high)}, e.g. \"{seconds(default)}\"")
        return value

    def int_in(self, key: str, default: int, bounds: tuple[int, int]) -> int:
        """A whole number within `bounds` (inclusive)."""
        value = self.get(key, int, default=default)
        low, high = bounds
        if not low <= value <= high:
            at_least_one = " (must be at least 1)" if value < 1 else ""
            raise self.fail(key, f"{value} is outside {low:_}..{high:_}{at_least_one}",
                            f"write a whole number from {low:_} to {high:_}, e.g. {default}")
        return value

    def table(self, key: str, *, required: bool = True, hint: str | None = None) -> Table | None:
        self._seen.add(key)
        if key not in self._data:
            if required:
                error = self._missing(key, hint or f"add a [{self.field_name(key)}] table")
                raise self.fail(key, "is required but missing (a [table])", error.hint)
            return None
        value = self._data[key]
        if not isinstance(value, dict):
            raise self.fail(key, f"expected a table, got {type(value).__name__}")
        return Table(value, file=self._file, prefix=self.field_name(key), error=self._error)

    def finish(self) -> None:
        for key in self._data:
            if key not in self._seen:
                close = difflib.get_close_matches(key, sorted(self._seen), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(sorted(self._seen))}"
                raise self.fail(key, "unknown field", hint)


def seconds(value: float) -> str:
    """A duration as written in onguard.toml: "500ms", "0s", "30s"."""
    return f"{value * 1000:g}ms" if 0 < value < 1 else f"{value:g}s"


def _names(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(kind, kind.__name__) for kind in kinds)


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-\s\"]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def field_line(path: Path, field: str | None) -> int | None:
    """The line where a dotted field (or its table) is written, for error messages; None when not found."""
    if not field:
        return None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    *table_parts, key = field.split(".")
    table = ".".join(table_parts)
    current = ""
    table_line = None
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            current = header.group(1).replace(" ", "").replace('"', "")
            if current == field:
                return number  # the field is itself a table
            if current == table:
                table_line = number
            continue
        match = _KEY.match(line)
        if match and current == table and match.group(1) == key:
            return number
    return table_line
