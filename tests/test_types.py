"""The Draft tree: truncation by depth keeps exactly the nodes within it, chains and trees alike."""
import pytest

from hvd.types import Draft, DraftFeatures


def test_features_round_trip_through_a_dict():
    f = DraftFeatures(score=0.5, match_length=3.0, expected_accepted=1.25)
    assert DraftFeatures.from_dict(f.to_dict()) == f
    assert "expected_accepted" not in DraftFeatures().to_dict()  # unknown stays unknown
    assert DraftFeatures.from_dict({"score": 1, "someone_elses": 2.0}) == DraftFeatures(score=1.0)


@pytest.mark.parametrize("depth", [-1, 0, 1, 2, 3, 10])
def test_truncate_keeps_the_nodes_within_a_depth(depth):
    tree = Draft((5, 6, 7, 8, 9), (-1, 0, -1, 1, 2), features=DraftFeatures(score=1.0), source="x")
    chain = Draft.chain([5, 6, 7, 8], score=2.0)
    for d in (tree, chain):
        cut = d.truncate(depth)
        kept = [i for i, k in enumerate(d.depths()) if k <= depth]
        assert list(cut.tokens) == [d.tokens[i] for i in kept]
        assert cut.max_depth() == min(max(depth, 0), d.max_depth())
        assert cut.features == d.features and cut.source == d.source
    assert tree.truncate(2).parents == (-1, 0, -1, 2)  # indices made compact
    assert chain.truncate(10) is chain
