"""The one error type for user mistakes.

Anything a user can fix (a YAML key, a path, a URI, a tokenizer name) raises `UserError` with a
one-line message that names what is wrong and how to fix it. `scripts/*.py` catch it once and print
that line; everything else is a bug and keeps its traceback.
"""
import difflib
from typing import Iterator, Optional


class UserError(Exception):
    """A mistake in user input; the message is a single line shown as-is."""


def closest(word, choices) -> str:
    """' (did you mean X?)' for the nearest choice, or '' when nothing is near."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def causes(err: Optional[BaseException]) -> Iterator[BaseException]:
    """`err` and what it was raised from or while handling, outermost first (each once)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        # s3transfer's RetriesExceededError keeps its cause in an attribute, not in the chain
        err = getattr(err, "last_exception", None) or err.__cause__ or err.__context__
