"""The one error type for user mistakes.

Anything a user can fix (a YAML key, a path, a URI, a tokenizer name) raises `UserError` with a
one-line message that names what is wrong and how to fix it. `scripts/*.py` catch it once and print
that line; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in user input; the message is a single line shown as-is."""
