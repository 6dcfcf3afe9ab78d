"""The exact target on every family it runs (hvd/targets/family.py), each a tiny random config
of transformers' own implementation (no weights needed): batch-invariant by construction like
Llama, and the same model as transformers' up to int8 rounding — close logits at every
position, the same greedy continuation. A family feature the kernels got wrong (a window, a
norm, a bias, the rope) moves the logits far more than the rounding does: see
`test_a_wrong_family_feature_is_caught`."""
import pytest
import torch

from hvd.targets.check import check_exact
from hvd.targets.exact import ExactLlamaTarget
from hvd.targets.family import Architecture, llama_layers
from hvd.targets.shape import UnsupportedModel
from hvd.types import Draft

from conftest import VOCAB, decode_one_by_one

SIZES = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.1, eos_token_id=0, bos_token_id=0,
             pad_token_id=0)


def _llama3():
    from transformers import LlamaConfig, LlamaForCausalLM

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
    return LlamaForCausalLM(LlamaConfig(**SIZES, rope_parameters=rope, tie_word_embeddings=True))


def _mistral():
    from transformers import MistralConfig, MistralForCausalLM

    return MistralForCausalLM(MistralConfig(**SIZES, sliding_window=8, tie_word_embeddings=False))


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**SIZES, tie_word_embeddings=True))


def _qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(Qwen3Config(**SIZES, head_dim=24, tie_word_embeddings=True))


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(**{**SIZES, "num_hidden_layers": 4}, head_dim=32, query_pre_attn_scalar=24,
                           sliding_window=8, layer_types=["sliding_attention", "full_attention"] * 2,
                           rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                            "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 4.0}})
    model = Gemma3ForCausalLM(cfg)
    with torch.no_grad():  # Gemma's norms scale by 1 + w: give w a spread so the offset matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.3)
    return model


FAMILIES = {"llama3": _llama3, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma3": _gemma3}


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    model = FAMILIES[name]().eval()
    with torch.no_grad():
        for mod in model.modules():  # transformers initializes biases to 0: give them weight
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.normal_(0.0, 0.5)
    return model


def seq(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (n,), generator=g).tolist()


def reference_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per position: |got - ref| / |ref - mean(ref)| (L2 over the vocabulary)."""
    centered = ref - ref.mean(-1, keepdim=True)
    return (got - ref).norm(dim=-1) / centered.norm(dim=-1)


def exact_logits(target, ids: list[int]) -> torch.Tensor:
    return decode_one_by_one(target, ids[:1], ids[1:])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    model = build(request.param)
    return request.param, model, ExactLlamaTarget(model)


def test_architecture_is_read_from_the_config(family):
    name, model, target = family
    arch = target.arch
    assert arch.family == {"llama3": "llama"}.get(name, name)
    if name in ("mistral", "gemma3"):
        assert 8 in arch.windows  # Gemma: the sliding layers only
        assert (0 in arch.windows) == (name == "gemma3")
    else:
        assert set(arch.windows) == {0}


def test_family_is_batch_invariant(family):
    _, _, target = family
    assert check_exact(target) is None


def test_family_logits_match_transformers_at_every_position(family):
    _, model, target = family
    ids = seq(40)  # past every window (8) and the llama3 original context (32)
    err = relative_error(exact_logits(target, ids), reference_logits(model, ids)[1:])
    assert err.max() < 0.1, err.max()


def test_family_greedy_matches_transformers(family):
    """Greedy continuations are token-identical to transformers' generate, except that a random
    tiny model may reach a near-tie: then the first difference must be one (transformers' top-2
    margin there below twice the largest logit difference), and only after 8 equal tokens."""
    _, model, target = family
    prompt, n = seq(12, seed=1), 24
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(prompt):].tolist()
    got, logits, steps = [], target.prefill(prompt), []
    for _ in range(n):
        steps.append(logits)
        got.append(int(logits.argmax()))
        logits = target.verify(got[-1], Draft.empty())[0]
        target.commit([])
    if got == out:
        return
    i = next(i for i, (a, b) in enumerate(zip(got, out)) if a != b)
    ref = reference_logits(model, prompt + out)[len(prompt) - 1 + i]
    top2 = ref.topk(2).values
    assert i >= 8 and top2[0] - top2[1] < 2 * (steps[i] - ref).abs().max(), (i, got, out)


WRONG = [("gemma3", "window"), ("gemma3", "q_norm"), ("gemma3", "post_attn"), ("gemma3", "post_mlp"),
         ("mistral", "window"), ("qwen2", "qkv_bias"), ("qwen3", "q_norm"), ("llama3", "rope"), ("gemma3", "rope")]


@pytest.mark.parametrize("name,feature", WRONG)
def test_a_wrong_family_feature_is_caught(name, feature, monkeypatch):
    """The closeness bound separates int8 rounding from a family feature done wrong: each
    feature dropped from the kernels' switches (rope: unscaled, one base for every layer)
    moves the logits past it."""
    from hvd.targets import exact as exact_module
    from hvd.targets.shape import LlamaShape, rope_tables

    model = build(name)
    if feature == "rope":
        plain = lambda m, arch, n: {k: rope_tables(LlamaShape.of(m.config), n) for k in set(arch.layer_kinds)}  # noqa: E731
        monkeypatch.setattr(exact_module, "rope_tables", plain)
    target = ExactLlamaTarget(model)
    if feature != "rope":
        for layer in target._layers:
            setattr(layer.spec, feature, 0)
    ids = seq(40)
    assert relative_error(exact_logits(target, ids), reference_logits(model, ids)[1:]).max() > 0.1, None


def test_lean_target_refuses_other_families():
    for name in ("qwen2", "qwen3", "gemma3"):
        with pytest.raises(UnsupportedModel):
            llama_layers(build(name), "lean")


def test_unsupported_architecture_says_why():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(UnsupportedModel, match="gpt2"):
        Architecture.of(model)


def test_family_gives_the_same_bits_on_every_integer_path(family):
    """AVX2 and, where the CPU has it, AVX-512 VNNI (its linears and 16-lane attention tiles) decode
    a prompt and a long verify (several query tiles and staged key blocks) to the same bits."""
    from hvd.targets.native import library, use_integer_path

    name, model, _ = family
    lib = library()
    if use_integer_path("auto", lib) != "avx512-vnni":
        pytest.skip("this CPU has one integer path (AVX2)")
    prompt, cont = seq(90, seed=4), seq(24, seed=5)
    out = []
    try:
        for path in ("avx2", "avx512-vnni"):
            use_integer_path(path, lib)
            t = ExactLlamaTarget(model)
            out.append((t.prefill(prompt), t.verify(cont[0], Draft.chain(cont[1:]))))
    finally:
        use_integer_path("auto", lib)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1]), name
