"""Methods and routers on hand-built [2, 5] log-probs with exact expected outputs."""

import math

import pytest
import torch

from fsgen_eval.core.methods import METHODS, contrastive, get_method, oracle, proxy, speculative
from fsgen_eval.core.routers import ROUTERS, get_router
from fsgen_eval.core.sampling import stats, warp

NEG = float("-inf")
P_LARGE = [[0.5, 0.3, 0.1, 0.05, 0.05], [0.25, 0.25, 0.25, 0.125, 0.125]]
P_SMALL = [[0.2, 0.2, 0.2, 0.2, 0.2], [0.5, 0.125, 0.125, 0.125, 0.125]]
P_BASE = [[0.1, 0.4, 0.2, 0.2, 0.1], [0.25, 0.25, 0.25, 0.125, 0.125]]


def lp(rows):
    return torch.tensor(rows, dtype=torch.float64).log()


def test_oracle_and_speculative_are_the_large_model():
    assert torch.equal(oracle(lp(P_SMALL), lp(P_LARGE)), lp(P_LARGE))
    assert torch.equal(speculative(lp(P_SMALL), lp(P_LARGE), num_draft=3), lp(P_LARGE))


def test_contrastive_obrien_hand_computed():
    out = contrastive(lp(P_SMALL), lp(P_LARGE), alpha=0.25, beta=0.5)
    # row 0: plausible = p_large >= 0.25 * 0.5 -> tokens 0, 1
    assert out[0, 0].item() == pytest.approx(1.5 * math.log(0.5) - 0.5 * math.log(0.2))
    assert out[0, 1].item() == pytest.approx(1.5 * math.log(0.3) - 0.5 * math.log(0.2))
    assert out[0, 2:].tolist() == [NEG] * 3
    # row 1: plausible = p_large >= 0.0625 -> all; token 0 is penalised by the confident small model
    assert out[1, 0].item() == pytest.approx(1.5 * math.log(0.25) - 0.5 * math.log(0.5))
    assert out[1, 3].item() == pytest.approx(1.5 * math.log(0.125) - 0.5 * math.log(0.125))
    assert out[1].argmax().item() == 1


def test_contrastive_fsgen_variant_hand_computed():
    out = contrastive(lp(P_SMALL), lp(P_LARGE), alpha=0.1, beta=0.5, contrastive_variant="fsgen")
    # s + 0.5 (l - s) = geometric mean; alpha 0.1 keeps p_large >= 0.05: everything in row 0
    assert out[0, 3].item() == pytest.approx(0.5 * math.log(0.2) + 0.5 * math.log(0.05))
    assert torch.isfinite(out).all()


def test_contrastive_reductions_to_large():
    large = lp(P_LARGE)
    assert torch.allclose(contrastive(lp(P_SMALL), large, alpha=0.0, beta=0.0), large)
    fs = contrastive(lp(P_SMALL), large, alpha=0.0, beta=1.0, contrastive_variant="fsgen")
    assert torch.allclose(fs, large)


def test_proxy_hand_computed_and_alpha_zero():
    out = proxy(lp(P_SMALL), lp(P_LARGE), lp(P_BASE), alpha=1.0)
    assert out[0, 0].item() == pytest.approx(math.log(0.5) + math.log(0.2) - math.log(0.1))
    assert out[1, 0].item() == pytest.approx(math.log(0.25) + math.log(0.5) - math.log(0.25))
    assert torch.equal(proxy(lp(P_SMALL), lp(P_LARGE), lp(P_BASE), alpha=0.0), lp(P_LARGE))
    with pytest.raises(ValueError, match="small_base"):
        proxy(lp(P_SMALL), lp(P_LARGE), None)


def test_stats_hand_computed():
    ent, top1, margin = stats(lp(P_SMALL))
    assert ent[0].item() == pytest.approx(math.log(5))
    assert top1.tolist() == pytest.approx([0.2, 0.5])
    assert margin.tolist() == pytest.approx([0.0, 0.375])
    # masked (-inf) tokens contribute nothing to the entropy
    ent_masked = stats(torch.tensor([[math.log(0.5), math.log(0.5), NEG]]))[0]
    assert ent_masked.item() == pytest.approx(math.log(2))


def test_routers_hand_computed():
    s = lp(P_SMALL)  # row 0 uniform (entropy log 5, top1 0.2, margin 0); row 1 peaked (top1 0.5)
    assert get_router("always").build({})(s).tolist() == [True, True]
    assert get_router("never").build({})(s).tolist() == [False, False]
    assert get_router("max_prob").build({"threshold": 0.3})(s).tolist() == [True, False]
    assert get_router("margin").build({"threshold": 0.1})(s).tolist() == [True, False]
    assert get_router("entropy").build({"threshold": 1.5})(s).tolist() == [True, False]


def test_registries_name_the_valid_choices():
    assert set(METHODS) == {"oracle", "speculative", "contrastive", "proxy"}
    assert set(ROUTERS) == {"always", "never", "max_prob", "margin", "entropy", "learned"}
    with pytest.raises(ValueError, match="valid methods: oracle, speculative, contrastive, proxy"):
        get_method("medusa")
    with pytest.raises(ValueError, match="valid routers: always, never, max_prob, margin, entropy, learned"):
        get_router("sometimes")


def test_warp_top_k_and_top_p():
    logp = lp([[0.5, 0.3, 0.1, 0.05, 0.05]])
    k2 = warp(logp, 1.0, top_k=2).exp()
    assert k2[0].tolist() == pytest.approx([0.625, 0.375, 0, 0, 0])
    p7 = warp(logp, 1.0, top_p=0.7).exp()  # 0.5 < 0.7, 0.5+0.3 reaches it: keep two
    assert p7[0].tolist() == pytest.approx([0.625, 0.375, 0, 0, 0])
    p5 = warp(logp, 1.0, top_p=0.5).exp()  # the first token alone reaches 0.5
    assert p5[0].tolist() == pytest.approx([1, 0, 0, 0, 0])
    t2 = warp(logp, 2.0).exp()
    expect = torch.tensor(P_LARGE[0]).sqrt()
    assert t2[0].tolist() == pytest.approx((expect / expect.sum()).tolist())
