"""Parsing and validation of the /rates query string. Anything wrong is a 400."""

import re
from dataclasses import dataclass
from datetime import date

from werkzeug.datastructures import MultiDict

from .errors import ApiError

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits: \d takes any script's
# Port codes are 5 letters/digits and region slugs lower-case words joined by '_', but the
# tables take any text: whatever a region was named, it can be asked for. Only control
# characters and names longer than any real one are refused.
PLACE_MAX = 128
_PLACE = re.compile(rf"[^\x00-\x1f\x7f-\x9f]{{1,{PLACE_MAX}}}")


@dataclass(frozen=True)
class RatesQuery:
    date_from: date
    date_to: date
    origin: str
    destination: str

    @property
    def days(self) -> int:
        return (self.date_to - self.date_from).days + 1


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_parameter", message)


def _single(args: MultiDict, *names: str) -> str:
    """The one value given under any of ``names`` (aliases); a conflict is an error."""
    values = {v for name in names for v in args.getlist(name)}
    if not values:
        raise _bad(f"missing parameter {names[0]!r}" + "".join(f" (or {alias!r})" for alias in names[1:]))
    if len(values) > 1:
        # Named as the client sent it: an older client knows only the alias.
        sent = [name for name in names if name in args]
        if len(sent) == 1:
            raise _bad(f"parameter '{sent[0]}' is given more than once with different values")
        raise _bad(f"parameters {' and '.join(repr(n) for n in sent)} are both given, with different values")
    return values.pop()


def _date(args: MultiDict, name: str) -> date:
    raw = _single(args, name)
    if not _DATE.fullmatch(raw):
        raise _bad(f"'{name}' must be a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise _bad(f"'{name}' is not a valid date: {raw}") from None


def _place(args: MultiDict, name: str, alias: str) -> str:
    raw = _single(args, name, alias)
    if not _PLACE.fullmatch(raw):
        raise _bad(f"'{name}' must be a port code or a region slug (1 to {PLACE_MAX} characters, "
                   "none of them a control character)")
    return raw


def parse(args: MultiDict, max_range_days: int) -> RatesQuery:
    query = RatesQuery(
        date_from=_date(args, "date_from"),
        date_to=_date(args, "date_to"),
        origin=_place(args, "origin", "orig_code"),
        destination=_place(args, "destination", "dest_code"),
    )
    if query.date_from > query.date_to:
        raise _bad("'date_from' is after 'date_to'")
    if query.days > max_range_days:
        raise ApiError(400, "range_too_long",
                       f"the date range spans {query.days} days; at most {max_range_days} are allowed")
    return query
