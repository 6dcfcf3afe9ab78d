"""dflash: exact under greedy and sampling with a random drafter; hidden states reach drafters."""
import pytest
import torch

from hvd.errors import MethodUnavailable
from hvd.drafters import dflash
from hvd.drafters.base import Capabilities, DecodeContext
from hvd.drafters.dflash_model import DFlashConfig, DFlashNet, spread_layers
from hvd.types import Draft

from conftest import VOCAB, Recorder
from stats_util import two_sample

PROMPTS = [[3, 8, 1, 22, 9, 14], list(range(1, 30))]


def random_drafter(target, seed=0, window=16):
    torch.manual_seed(seed)
    net = DFlashNet(DFlashConfig(hidden=32, vocab=VOCAB, target_layers=(1, 2), n_layers=1, n_heads=4, head_dim=8,
                                 intermediate=64, block=6, window=window))
    with torch.no_grad():
        net.mask_emb.normal_()
    return dflash.DFlashDrafter(net, target.shared_weights())


@pytest.mark.parametrize("window", [4, 256])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_matches_ar(tiny_engine, prompt, window):
    ref = tiny_engine.generate(prompt, method="ar", max_new_tokens=48).token_ids
    got = tiny_engine.generate(prompt, max_new_tokens=48, drafter=random_drafter(tiny_engine.target, window=window))
    assert got.token_ids == ref
    assert max(s.draft_len for s in got.stats.steps) == 5  # block 6: 5 drafted tokens


def test_sampling_matches_ar_distribution(tiny_engine):
    prompt, n, seeds = [40, 41, 42, 40, 41, 42, 40, 41], 3, 500
    kw = dict(max_new_tokens=n, temperature=0.9, top_k=20)
    drafter = random_drafter(tiny_engine.target, seed=1)

    def marginals(**extra):
        counts = torch.zeros(n, VOCAB)
        for s in range(seeds):
            for i, t in enumerate(tiny_engine.generate(prompt, seed=s, **kw, **extra).token_ids):
                counts[i, t] += 1
        return counts

    ar, spec = marginals(method="ar"), marginals(drafter=drafter)
    for i in range(n):
        assert two_sample(ar[i], spec[i]) > 1e-3, i


class HiddenRecorder:
    """A scripted drafter that keeps the hidden states it is given."""

    name = "recorder"
    capabilities = Capabilities(needs_hidden_states=(1,))

    def __init__(self):
        self.seen = []

    def begin(self, prompt):
        pass

    def propose(self, ctx: DecodeContext) -> Draft:
        self.seen.append((list(ctx.tokens), ctx.hidden[1].clone()))
        return Draft.chain([5, 6])

    def observe(self, committed):
        pass

    def end(self, output):
        pass


def test_drafters_get_the_hidden_states_of_the_committed_tokens(tiny_engine):
    rec = HiddenRecorder()
    tiny_engine.generate(PROMPTS[0], max_new_tokens=12, drafter=rec)
    model = tiny_engine.target._model  # the transformers model behind the float32 target
    for tokens, hidden in rec.seen[:3] + rec.seen[-2:]:
        assert hidden.shape == (len(tokens) - 1, 32)
        with torch.inference_mode():
            ref = model(torch.tensor([tokens[:-1]]), output_hidden_states=True).hidden_states[1][0]
        torch.testing.assert_close(hidden, ref, atol=1e-4, rtol=1e-4)
    tiny_engine.generate(PROMPTS[0], method="ar", max_new_tokens=4)
    assert tiny_engine.target.hidden() == {}  # a request without such a drafter collects none


def test_checkpoint_round_trip_and_missing(tmp_path, tiny_engine):
    d = random_drafter(tiny_engine.target)
    dflash.save(d.net, tmp_path / "ck")
    again = dflash.for_target(tiny_engine.target, tmp_path / "ck")
    for a, b in zip(d.net.state_dict().values(), again.net.state_dict().values()):
        assert b.dtype == torch.float32 and torch.equal(a.half().float(), b)  # stored as fp16
    with pytest.raises(MethodUnavailable, match="hvd train drafter"):
        dflash.for_target(tiny_engine.target, tmp_path / "none")


def test_spread_layers():
    assert spread_layers(30) == (1, 10, 19, 28)
    assert spread_layers(2) == (1,)


def test_draft_vocabulary_limits_drafts_and_stays_exact(tiny_engine, tmp_path):
    prompt = PROMPTS[0]
    ref = tiny_engine.generate(prompt, method="ar", max_new_tokens=32).token_ids
    vocab = torch.tensor([7, 30, 2, 55])
    dflash.save(random_drafter(tiny_engine.target).net, tmp_path / "ck", vocab=vocab)
    net, loaded = dflash.load(tmp_path / "ck")
    assert loaded.tolist() == vocab.tolist()
    small = Recorder(dflash.DFlashDrafter(net, tiny_engine.target.shared_weights(), vocab=loaded))
    assert tiny_engine.generate(prompt, max_new_tokens=32, drafter=small).token_ids == ref
    allowed = set(vocab.tolist()) | set(prompt)
    drafted = {t for d in small.drafts for t in d.tokens}
    assert drafted and drafted <= allowed
    plain = Recorder(dflash.DFlashDrafter(net, tiny_engine.target.shared_weights()))
    everything = Recorder(dflash.DFlashDrafter(net, tiny_engine.target.shared_weights(), vocab=torch.arange(VOCAB)))
    for d in (plain, everything):
        tiny_engine.generate(prompt, max_new_tokens=32, drafter=d)
    assert [d.tokens for d in everything.drafts] == [d.tokens for d in plain.drafts]  # a full vocabulary changes nothing
