"""--text-field and --filter: dotted lookups, filter values compared as text, one-line errors."""
import pytest

from llmtrain.data.fields import Filter, keeps, lookup, make_selection
from llmtrain.errors import UserError

RECORD = {"content": {"text": "paper", "n": 3}, "lang": "Go", "stars": 12, "fork": False, "license": None,
          "a.b": "literal dotted key"}


@pytest.mark.parametrize("name,value,missing", [
    ("lang", "Go", None),
    ("content.text", "paper", None),
    ("a.b", "literal dotted key", None),
    ("body", None, "no 'body' field (keys: content, lang, stars, fork, license, a.b)"),
    ("content.body", None, "no 'content.body' field (keys of 'content': text, n)"),
    ("lang.name", None, "no 'lang.name' field ('lang' is str)"),
])
def test_lookup_follows_dots_and_names_what_is_there(name, value, missing):
    assert lookup(RECORD, name) == (value, missing)


@pytest.mark.parametrize("specs,kept", [
    (["lang=Python,Go"], True),
    (["lang=Python"], False),
    (["stars=12", "fork=false"], True),
    (["stars=12", "fork=true"], False),
    (["content.n=3"], True),
    (["license=None"], False),  # null never matches
])
def test_filters_compare_values_as_text_and_all_must_hold(specs, kept):
    assert keeps(RECORD, make_selection("content.text", specs).filters) == (kept, None)


def test_a_filter_on_a_missing_field_says_so():
    assert keeps(RECORD, (Filter("language", frozenset({"Go"})),)) == \
        (False, "no 'language' field (keys: content, lang, stars, fork, license, a.b) for --filter")


@pytest.mark.parametrize("text_field,specs,message", [
    ("text", ["lang"], r"--filter 'lang': expected COLUMN=VALUE\[,VALUE...\], e.g. --filter lang=Python,Go"),
    ("text", ["=Go"], r"--filter '=Go': expected COLUMN=VALUE"),
    ("text", ["lang="], r"--filter 'lang=': expected COLUMN=VALUE"),
    ("content..text", [], r"--text-field 'content..text': expected a field name or a dotted path"),
    ("", [], r"--text-field '': expected a field name"),
])
def test_bad_options_are_one_line(text_field, specs, message):
    with pytest.raises(UserError, match=message):
        make_selection(text_field, specs)
