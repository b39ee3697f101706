#!/bin/sh
# Makes the task's repository in the current (empty) directory.
set -eu
cat > textutil.py <<'DEFT_EOF'
"""Text helpers."""


def word_count(text):
    """Count the words of `text`.

    Words are separated by whitespace. Each word is lower-cased, and the punctuation
    characters . , ! ? at either end of a word are removed; a word left empty is not
    counted. Returns a dict mapping each word to how many times it appears.

    >>> word_count("The cat, the hat!")
    {'the': 2, 'cat': 1, 'hat': 1}
    """
    raise NotImplementedError
DEFT_EOF
git init -q -b main && git add -A && git -c user.name=deft-eval -c user.email=eval@deft.invalid commit -q -m "Initial commit"
