"""LGSS: the fast form equals the literal form (values and gradients), API checks, config round trip."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from sceneseg.models.lgss import network as model_mod
from sceneseg.models.lgss.network import LGSS, ModelConfig, difference_direct, difference_fast

DIMS = {"place": 48, "cast": 16, "audio": 24}
WEIGHTS = {"place": 0.5, "cast": 0.3, "audio": 0.2}


def small_config(shot_num: int = 4, **kw) -> ModelConfig:
    return ModelConfig(dict(DIMS), dict(WEIGHTS), shot_num=shot_num, sim_channel=12, lstm_hidden=8, fc_hidden=6, **kw)


def pair(cfg: ModelConfig, dtype: torch.dtype = torch.float64, seed: int = 0) -> tuple[LGSS, LGSS]:
    """A fast and a direct model holding the same weights."""
    torch.manual_seed(seed)
    fast = LGSS(cfg, fast=True).to(dtype)
    direct = LGSS(cfg, fast=False).to(dtype)
    direct.load_state_dict(fast.state_dict())
    return fast, direct


def random_feats(cfg: ModelConfig, batch: int, seq: int, dtype=torch.float64, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = cfg.shot_num
    return {m: torch.randn(batch, seq, k, d, generator=g, dtype=dtype) for m, d in cfg.feature_dims.items()}


def run(model: LGSS, feats: dict[str, torch.Tensor], seed: int = 2):
    """Forward + backward of a random linear functional; returns (out, param grads, input grads)."""
    inputs = {m: t.detach().clone().requires_grad_() for m, t in feats.items()}
    model.zero_grad()
    out = model(inputs)
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype).to(out.device)
    (out * probe).sum().backward()
    params = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return out.detach(), params, {m: t.grad for m, t in inputs.items()}


def assert_same(a, b, rtol: float, atol: float) -> None:
    out_a, params_a, inputs_a = a
    out_b, params_b, inputs_b = b
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=atol)
    assert params_a.keys() == params_b.keys()
    for name in params_a:
        torch.testing.assert_close(params_a[name], params_b[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")
    for name in inputs_a:
        torch.testing.assert_close(inputs_a[name], inputs_b[name], rtol=rtol, atol=atol, msg=lambda m: f"input {name}: {m}")


@pytest.fixture
def small_chunks(monkeypatch):
    """Force several relation chunks (with a ragged last one) even at test sizes."""
    monkeypatch.setitem(model_mod._CHUNK_ELEMENTS, "cpu", 12 * 37)


@pytest.mark.parametrize("shot_num", [2, 4, 6])
@pytest.mark.parametrize("batch", [1, 3])
def test_fast_equals_direct_float64(small_chunks, shot_num, batch):
    cfg = small_config(shot_num)
    fast, direct = pair(cfg)
    feats = random_feats(cfg, batch, seq=5)
    half = shot_num // 2
    feats["cast"][0, 1] = 0  # a whole zero window (no face in any shot)
    feats["cast"][0, 2, :half] = 0  # zero first half
    feats["cast"][-1, 3, half:] = 0  # zero second half
    feats["place"] = feats["place"].abs()  # place features are non-negative
    assert_same(run(fast, feats), run(direct, feats), rtol=1e-9, atol=1e-9)


def test_fast_equals_direct_at_cosine_eps_clamp(small_chunks):
    """Zero conv bias + a zero half gives a zero vector: torch clamps its norm to eps (and keeps the
    unclamped norm's gradient); the Gram form must reproduce that, gradients of ~1e8 included."""
    cfg = small_config()
    fast, direct = pair(cfg)
    for model in (fast, direct):
        with torch.no_grad():
            model.heads["cast"].difference.bias.zero_()
    feats = random_feats(cfg, 2, seq=4)
    feats["cast"][0, 0, :2] = 0
    feats["cast"][1, 3] = 0
    feats["cast"][1, 1, 2:] = 1e-12  # norm below eps but not zero
    a, b = run(fast, feats), run(direct, feats)
    assert b[1]["heads.cast.difference.bias"].abs().max() > 1e3  # the clamp path ran (grads are ~1e-2 otherwise)
    assert_same(a, b, rtol=1e-9, atol=1e-9)


def test_difference_branch_matches_cosine_similarity():
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(1, 5, (2, 1)).double()
    x = torch.randn(7, 4, 33, dtype=torch.float64)
    x[2] = 0
    a = conv(x[:, None, :2])[:, :, 0]
    b = conv(x[:, None, 2:])[:, :, 0]
    expected = F.cosine_similarity(a, b, dim=2)
    torch.testing.assert_close(difference_fast(x, conv), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(difference_direct(x, conv), expected, rtol=0, atol=0)
    # a zero window sees the constant vectors bias_c * 1 in both halves: cosine 1 (or 0 for bias 0)
    torch.testing.assert_close(difference_fast(x, conv)[2], torch.ones(5, dtype=torch.float64))


def test_float32_cosine_is_accurate_for_similar_shots():
    """Similar consecutive shots make the Gram quadratic forms cancel; the Gram part runs in float64."""
    torch.manual_seed(6)
    conv = torch.nn.Conv2d(1, 32, (2, 1))
    x = (2 * torch.rand(1, 1, 512) + 0.1 * torch.rand(20, 4, 512)).relu()
    x[3] = 0
    ref = difference_direct(x.double(), conv.double())
    got = difference_fast(x, conv.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-6)


def test_relation_winner_gets_gradient():
    """For a zero window the relation value is the largest bias; only that channel's bias moves."""
    cfg = ModelConfig({"cast": 8}, {"cast": 1.0}, sim_channel=6, lstm_hidden=4, fc_hidden=3)
    torch.manual_seed(4)
    model = LGSS(cfg).double()
    conv = model.heads["cast"].relation
    x = torch.zeros(5, 4, 8, dtype=torch.float64)
    values = model_mod.relation_fast(x, conv)
    torch.testing.assert_close(values, conv.bias.max().expand(5, 8))
    values.sum().backward()
    expected = torch.zeros(6, dtype=torch.float64)
    expected[conv.bias.argmax()] = 40.0
    torch.testing.assert_close(conv.bias.grad, expected)


def test_float32_fast_close_to_direct():
    cfg = small_config()
    fast, direct = pair(cfg, dtype=torch.float32)
    feats = {m: t.abs() for m, t in random_feats(cfg, 2, 6, dtype=torch.float32).items()}
    assert_same(run(fast, feats), run(direct, feats), rtol=1e-4, atol=1e-5)


def test_inference_path_equals_training_path():
    cfg = small_config()
    fast, direct = pair(cfg, dtype=torch.float32)
    feats = random_feats(cfg, 2, 3, dtype=torch.float32)
    with torch.no_grad():
        no_grad = fast(feats)
        literal = direct(feats)
    torch.testing.assert_close(no_grad, fast(feats).detach(), rtol=0, atol=0)
    torch.testing.assert_close(no_grad, literal, rtol=1e-5, atol=1e-6)


def test_shapes_and_fusion():
    cfg = small_config()
    model = LGSS(cfg).double()
    for batch, seq in [(1, 1), (2, 7)]:
        feats = random_feats(cfg, batch, seq)
        out = model(feats)
        assert out.shape == (batch, seq, 2)
        fused = sum(WEIGHTS[m] * model.heads[m](feats[m], True) for m in DIMS)
        torch.testing.assert_close(out, fused, rtol=1e-12, atol=1e-12)
        bound = model.heads["place"].boundary(feats["place"].reshape(batch * seq, 4, -1), True)
        assert bound.shape == (batch * seq, DIMS["place"] + cfg.sim_channel)


def test_gradients_reach_every_parameter():
    cfg = small_config()
    model = LGSS(cfg)
    _, grads, inputs = run(model, random_feats(cfg, 2, 4, dtype=torch.float32))
    assert set(grads) == {n for n, _ in model.named_parameters()}
    for name, grad in grads.items():
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    for name, grad in inputs.items():
        assert grad.abs().sum() > 0, name


def test_input_errors_name_the_modality():
    cfg = small_config()
    model = LGSS(cfg)
    feats = random_feats(cfg, 1, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match="'audio' missing"):
        model({m: t for m, t in feats.items() if m != "audio"})
    bad = dict(feats, cast=torch.zeros(1, 2, 4, 17))
    with pytest.raises(ValueError, match=r"'cast'.*D=16.*\[1, 2, 4, 17\]"):
        model(bad)
    with pytest.raises(ValueError, match=r"'place'.*\[B, S, 4, 48\].*\[1, 2, 3, 48\]"):
        model(dict(feats, place=torch.zeros(1, 2, 3, 48)))
    with pytest.raises(ValueError, match=r"^LGSS input 'cast': expected batch/window dims \[1, 2\] like the other "
                                         r"modalities, found \[1, 3\]$"):
        model(dict(feats, cast=torch.zeros(1, 3, 4, 16)))


def test_config_round_trip(tmp_path):
    cfg = small_config()
    d = cfg.to_dict()
    assert ModelConfig.from_dict(d) == cfg
    model = LGSS(cfg)
    path = tmp_path / "ckpt.pt"
    torch.save({"model_config": d, "state_dict": model.state_dict()}, path)
    ckpt = torch.load(path, weights_only=True)
    loaded_cfg = ModelConfig.from_dict(ckpt["model_config"])
    assert loaded_cfg == cfg and list(loaded_cfg.feature_dims) == list(DIMS)
    loaded = LGSS(loaded_cfg, fast=False)
    loaded.load_state_dict(ckpt["state_dict"])
    feats = random_feats(cfg, 1, 3, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(feats), model(feats), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"shot_num": 3}, "shot_num"),
        ({"shot_num": True}, "shot_num"),
        ({"sim_channel": 0}, "sim_channel"),
        ({"fusion_weights": {"place": 1.0}}, "fusion_weights"),
        ({"fusion_weights": {"place": 0.5, "cast": float("nan"), "audio": 0.2}}, r"fusion_weights\.cast"),
        ({"feature_dims": {}}, "feature_dims"),
        ({"lr": 0.1}, r"unknown keys \['lr'\]"),
    ],
)
def test_config_errors_name_the_key(change, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_dict({**small_config().to_dict(), **change})


P, C, A = DIMS
BAD_CONFIGS = [  # (keywords of ModelConfig, the whole message)
    ({"feature_dims": {"place": 2.5, "cast": 16, "audio": 24}},
     "model.feature_dims: expected str -> positive int, got 'place': 2.5"),
    ({"feature_dims": {"place": 48, 3: 16, "audio": 24}}, "model.feature_dims: expected str -> positive int, got 3: 16"),
    ({"feature_dims": {"place": 48, "cast": 0, "audio": 24}}, "model.feature_dims: expected str -> positive int, got 'cast': 0"),
    ({"feature_dims": [48, 16]}, "model.feature_dims: expected a non-empty mapping modality -> dim, got [48, 16]"),
    ({"fusion_weights": {"cast": 0.3, "place": 0.5, "audio": 0.2}},
     f"model.fusion_weights: expected the keys {[P, C, A]} (in that order), got {[C, P, A]}"),
    ({"fusion_weights": 0.5}, f"model.fusion_weights: expected the keys {[P, C, A]} (in that order), got 0.5"),
    ({"fusion_weights": {"place": True, "cast": 0.3, "audio": 0.2}},
     "model.fusion_weights.place: expected a finite number, got True"),
    ({"fusion_weights": {"place": 0.5, "cast": "0.3", "audio": 0.2}},
     "model.fusion_weights.cast: expected a finite number, got '0.3'"),
    ({"shot_num": 0}, "model.shot_num: expected an even int >= 2, got 0"),
    ({"shot_num": 4.0}, "model.shot_num: expected an even int >= 2, got 4.0"),
    ({"lstm_hidden": 0}, "model.lstm_hidden: expected a positive int, got 0"),
    ({"fc_hidden": 2.0}, "model.fc_hidden: expected a positive int, got 2.0"),
    ({"input_scale": {"place": 1.0, "cast": 0.0, "audio": 1.0}},
     "model.input_scale.cast: expected a finite positive number, got 0.0"),
    ({"input_scale": {"place": 1.0, "cast": float("inf"), "audio": 1.0}},
     "model.input_scale.cast: expected a finite positive number, got inf"),
    ({"input_scale": {"place": True, "cast": 1.0, "audio": 1.0}},
     "model.input_scale.place: expected a finite positive number, got True"),
    ({"input_scale": {"place": 1.0, "cast": 1.0, "audio": "2"}},
     "model.input_scale.audio: expected a finite positive number, got '2'"),
    ({"input_scale": {"place": 1.0}}, f"model.input_scale: expected the keys {[P, C, A]} (in that order), got {{'place': 1.0}}"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CONFIGS)
def test_config_refusals_are_one_whole_sentence(change, message):
    kw = {"feature_dims": dict(DIMS), "fusion_weights": dict(WEIGHTS), **change}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ModelConfig(**kw)


def test_config_accepts_the_smallest_legal_sizes():
    """A 1-dimensional modality, 2 shots, one channel and one unit everywhere: the smallest LGSS runs."""
    dims, weights, scale = {"place": 1, "cast": 1}, {"place": 1, "cast": 0}, {"place": 2, "cast": 0.5}
    cfg = ModelConfig(dims, weights, shot_num=2, sim_channel=1, lstm_hidden=1, fc_hidden=1, input_scale=scale)
    dims["place"], weights["place"], scale["place"] = 9, 9.0, 9.0  # the config holds its own copies
    assert cfg.feature_dims == {"place": 1, "cast": 1}
    assert cfg.fusion_weights == {"place": 1.0, "cast": 0.0} and type(cfg.fusion_weights["place"]) is float
    assert cfg.input_scale == {"place": 2.0, "cast": 0.5} and type(cfg.input_scale["place"]) is float
    out = LGSS(cfg)({"place": torch.zeros(1, 3, 2, 1), "cast": torch.zeros(1, 3, 2, 1)})
    assert out.shape == (1, 3, 2) and bool(torch.isfinite(out).all())


def test_config_missing_key():
    d = small_config().to_dict()
    del d["fusion_weights"]
    with pytest.raises(ValueError, match=r"missing required keys \['fusion_weights'\]"):
        ModelConfig.from_dict(d)
    with pytest.raises(ValueError, match=r"^model config: expected a mapping, got list$"):
        ModelConfig.from_dict([d])


def test_boundary_stays_float32_under_autocast():
    """The boundary network under CPU bf16 autocast. (The whole model is not run here: oneDNN refuses a
    bf16 LSTM on CPUs without bf16 support, and the pipeline autocasts on CUDA only; see the CUDA test.)"""
    cfg = small_config()
    model = LGSS(cfg)
    x = random_feats(cfg, 2, 3, dtype=torch.float32)["place"].reshape(6, 4, -1)
    plain = model.heads["place"].boundary(x, True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = model.heads["place"].boundary(x.bfloat16(), True)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, model.heads["place"].boundary(x.bfloat16().float(), True), rtol=0, atol=0)
    assert torch.isfinite(plain).all()


@pytest.fixture
def no_tf32():
    """TF32 (10-bit mantissa) in cuBLAS/cuDNN would be compared against full float32 on the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _accelerator(name: str) -> torch.device:
    """The named GPU, or a skip: comparing the CPU with itself would prove nothing."""
    if name == "cuda" and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    pytest.skip(f"no {name} device here")


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_on_accelerator_matches_cpu(no_tf32, name):
    device = _accelerator(name)
    cfg = small_config()
    torch.manual_seed(5)
    cpu_model = LGSS(cfg)
    dev_model = LGSS(cfg).to(device)
    dev_model.load_state_dict(cpu_model.state_dict())
    feats = random_feats(cfg, 2, 4, dtype=torch.float32)
    ref = run(cpu_model, feats)
    got = run(dev_model, {m: t.to(device) for m, t in feats.items()})
    got = (got[0].cpu(), {n: g.cpu() for n, g in got[1].items()}, {m: g.cpu() for m, g in got[2].items()})
    assert_same(got, ref, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast is used on CUDA only (autocast_for is a no-op elsewhere)")
def test_cuda_bf16_autocast_close_to_float32(no_tf32):
    """The training and inference path on CUDA: LSTM and fc layers under bf16 autocast, the boundary
    network in float32/float64. bf16 keeps 8 significant bits (relative rounding 2**-9, 0.2%);
    through a 6-step LSTM and two linear layers that leaves logits of order 0.1-1 a few 1e-3 off
    (2e-3 measured on the CPU with the LSTM and fc weights cast to bf16, gradient cosine 1.0000).
    Stated tolerance: logits within 2e-2 + 2e-2 |logit| of float32, boundary probabilities within
    1e-2, and the gradient of the weighted training loss within 10% in norm and cosine > 0.99."""
    from sceneseg.models.lgss.inference import autocast_for

    device = torch.device("cuda")
    cfg = small_config()
    torch.manual_seed(5)
    model = LGSS(cfg).to(device)
    feats = {m: t.to(device) for m, t in random_feats(cfg, 4, 6, dtype=torch.float32).items()}
    labels = torch.randint(0, 2, (4 * 6,), generator=torch.Generator().manual_seed(3)).to(device)
    weight = torch.tensor([0.5, 5.0], device=device)

    def loss_and_grad(autocast: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model.zero_grad()
        if autocast:
            with autocast_for(device):
                logits = model(feats)  # [B, S, 2]
        else:
            logits = model(feats)
        loss = F.cross_entropy(logits.float().reshape(-1, 2), labels, weight=weight)
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        return logits.detach(), loss.detach(), grad

    ref_logits, ref_loss, ref_grad = loss_and_grad(autocast=False)
    logits, loss, grad = loss_and_grad(autocast=True)
    assert ref_logits.dtype == torch.float32
    assert logits.dtype == torch.bfloat16  # autocast did run on the LSTM and heads
    with autocast_for(device):
        place = feats["place"].reshape(-1, cfg.shot_num, DIMS["place"])
        assert model.heads["place"].boundary(place, True).dtype == torch.float32  # kept out of bf16
    torch.testing.assert_close(logits.float(), ref_logits, rtol=2e-2, atol=2e-2)
    prob_gap = (torch.softmax(logits.float(), -1) - torch.softmax(ref_logits, -1)).abs().max().item()
    assert prob_gap < 1e-2
    assert abs(loss.item() - ref_loss.item()) < 2e-2 * max(1.0, ref_loss.item())
    assert torch.isfinite(grad).all()
    assert abs(grad.norm().item() / ref_grad.norm().item() - 1) < 0.1
    assert F.cosine_similarity(grad, ref_grad, dim=0).item() > 0.99


def test_channel_max_chunks_stay_within_each_devices_element_budget():
    """The fast branch scores rows against channels in chunks: 2^19 elements on a CPU (cache-sized),
    2^26 on an accelerator, at least one row however many channels."""
    rows = model_mod._chunk_rows
    assert rows(torch.device("cpu"), 512) == 1024 and rows(torch.device("cpu"), 3) == (1 << 19) // 3
    assert rows(torch.device("cuda", 0), 512) == 1 << 17 and rows(torch.device("mps"), 1 << 20) == 64
    assert rows(torch.device("cpu"), 1 << 20) == 1 and rows(torch.device("cuda"), 1 << 27) == 1


@pytest.mark.parametrize("frozen", ["bias", "weight"])
def test_the_relation_branch_trains_what_is_not_frozen(frozen):
    """Features that need no gradient (as in training) and one of the relation convolution's tensors frozen:
    the other still gets the literal form's gradient (the fast form picks its gradient path by what needs one)."""
    cfg = small_config()
    fast, direct = pair(cfg)
    feats = random_feats(cfg, 2, 3)
    grads = []
    for model in (fast, direct):
        for head in model.heads.values():
            getattr(head.relation, frozen).requires_grad_(False)
        model.zero_grad()
        model(feats).square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if "relation" in n})
    other = "weight" if frozen == "bias" else "bias"
    for name, grad in grads[1].items():
        if name.endswith(frozen):
            assert grad is None and grads[0][name] is None, name
        else:
            assert name.endswith(other) and grad.abs().sum() > 0, name
            torch.testing.assert_close(grads[0][name], grad, rtol=1e-6, atol=1e-9, msg=name)


def test_lgss_runs_the_fast_form_unless_asked_for_the_literal_one(monkeypatch):
    """The fast form is the default (same outputs as the literal one, tested above; much less memory)."""
    cfg = small_config()
    feats = random_feats(cfg, 1, 2, dtype=torch.float32)
    literal = LGSS(cfg, fast=False)(feats)
    for name in ("relation_direct", "difference_direct"):
        monkeypatch.setattr(model_mod, name, lambda *a: pytest.fail("the literal form ran"))
    assert LGSS(cfg).fast is True and LGSS(cfg)(feats).shape == literal.shape
