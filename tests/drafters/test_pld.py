import numpy as np

from hvd.drafters.base import DecodeContext
from hvd.drafters.pld import PLDConfig, PromptLookupDrafter, find_continuation


def test_longest_most_recent_match_wins():
    toks = np.array([1, 2, 3, 9, 9, 7, 2, 3, 4, 5, 1, 2, 3])
    n, cont = find_continuation(toks, 2, 3, 4)
    assert n == 3 and cont.tolist() == [9, 9, 7, 2]  # only the first "1 2 3" is followed by more
    n, cont = find_continuation(np.array([2, 3, 4, 8, 2, 3, 5, 2, 3]), 2, 2, 2)
    assert n == 2 and cont.tolist() == [5, 2]  # the most recent "2 3"


def test_no_match_and_short_context():
    assert find_continuation(np.array([1, 2, 3, 4]), 2, 4, 5)[0] == 0
    assert find_continuation(np.array([1]), 1, 3, 5)[0] == 0


def test_drafter_respects_budget_and_learns_output():
    d = PromptLookupDrafter(PLDConfig(min_ngram=1, max_ngram=2, max_draft=8))
    d.begin([5, 6, 7, 8, 9, 10, 11])
    d.observe([5, 6])
    draft = d.propose(DecodeContext([5, 6, 7, 8, 9, 10, 11, 5, 6], 7, max_draft=3))
    assert list(draft.tokens) == [7, 8, 9] and draft.parents == (-1, 0, 1)
    assert len(d.propose(DecodeContext([], 7, max_draft=0))) == 0
