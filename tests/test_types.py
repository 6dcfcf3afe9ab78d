"""The Draft tree: truncation by depth keeps exactly the nodes within it, chains and trees alike."""
import pytest
import torch

from hvd.types import Draft


@pytest.mark.parametrize("depth", [-1, 0, 1, 2, 3, 10])
def test_truncate_keeps_the_nodes_within_a_depth(depth):
    tree = Draft((5, 6, 7, 8, 9), (-1, 0, -1, 1, 2), features={"score": 1.0}, source="x")
    chain = Draft.chain([5, 6, 7, 8], score=2.0)
    for d in (tree, chain):
        cut = d.truncate(depth)
        kept = [i for i, k in enumerate(d.depths()) if k <= depth]
        assert list(cut.tokens) == [d.tokens[i] for i in kept]
        assert cut.max_depth() == min(max(depth, 0), d.max_depth())
        assert cut.features == d.features and cut.source == d.source
    assert tree.truncate(2).parents == (-1, 0, -1, 2)  # indices made compact
    q = torch.eye(10)[[5, 6, 7]]
    assert torch.equal(Draft((5, 6, 7), (-1, 0, 1), q).truncate(2).probs, q[:2])
    assert chain.truncate(10) is chain
