"""Analysis functions on matrices with known answers."""
import math

import pytest
import torch

from lopt_core import analysis as A
from lopt_core.data import load_task
from lopt_core.methods import build_method


def diag_matrix(values, d=8):
    X = torch.zeros(len(values), d, dtype=torch.float64)
    for i, v in enumerate(values):
        X[i, i] = v
    return X


def test_singular_values_of_a_diagonal_matrix():
    s = A.singular_values(diag_matrix([1.0, 3.0, 2.0]))
    assert s.tolist() == pytest.approx([3.0, 2.0, 1.0])


def test_energy_and_effective_ranks_on_a_known_spectrum():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)  # energies 9, 4, 1, 0 of 14
    assert A.cumulative_energy(s).tolist() == pytest.approx([9 / 14, 13 / 14, 1.0, 1.0])
    assert A.effective_rank(s, 0.9) == 2 and A.effective_rank(s, 0.5) == 1 and A.effective_rank(s, 1.0) == 3
    assert A.normalized_spectrum(s).sum().item() == pytest.approx(1.0)
    assert A.entropy_effective_rank(torch.ones(5)) == pytest.approx(5.0)
    assert A.entropy_effective_rank(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    p = torch.tensor([0.5, 0.5])
    assert A.entropy_effective_rank(p) == pytest.approx(math.exp(math.log(2)))
    with pytest.raises(ValueError, match="energy"):
        A.effective_rank(s, 0.0)


def test_truncate_is_the_eckart_young_approximation():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(6, 10, generator=g)
    s = torch.linalg.svdvals(X)
    for r in range(1, 7):
        err = torch.linalg.norm(X - A.truncate(X, r)) ** 2
        assert err.item() == pytest.approx((s[r:] ** 2).sum().item(), rel=1e-4, abs=1e-8)
        assert torch.linalg.matrix_rank(A.truncate(X, r)).item() == r
    with pytest.raises(ValueError, match="between 1 and 6"):
        A.truncate(X, 7)


def test_svd_warm_start_factors_multiply_to_the_truncation():
    X = torch.randn(5, 12)
    U, V = A.svd_warm_start(X, 3)
    assert U.shape == (5, 3) and V.shape == (3, 12)
    torch.testing.assert_close(U @ V, A.truncate(X, 3), atol=1e-5, rtol=1e-4)


def test_truncate_method_scores_like_the_truncated_prompt(tiny_llama):
    method = build_method("prompt_tuning", tiny_llama, prompt_len=6, init="random")
    cut = A.truncate_method(method, 2, tiny_llama)
    assert cut.name == "lopt1" and cut.config.rank == 2
    torch.testing.assert_close(cut.input_prompt(), A.truncate(method.input_prompt(), 2), atol=1e-5, rtol=1e-4)
    full = A.truncate_method(method, 6, tiny_llama)
    task = load_task("sentiment")
    batch = task.collate(task.examples("validation", 2), tiny_llama.tokenizer)
    torch.testing.assert_close(full.hidden_states(tiny_llama, batch), method.hidden_states(tiny_llama, batch),
                               atol=1e-5, rtol=1e-4)


def test_nearest_tokens_finds_the_rows_it_was_built_from():
    E = torch.randn(50, 16)
    X = E[[3, 17, 42]] * 2.5  # scaling does not change cosine
    idx, sims = A.nearest_tokens(X, E, k=2)
    assert idx[:, 0].tolist() == [3, 17, 42] and torch.allclose(sims[:, 0], torch.ones(3))


def test_prompt_similarity_known_cases():
    X = torch.randn(6, 32, dtype=torch.float64)
    same = A.prompt_similarity(X, 3 * X, r=3)
    assert same["subspace"] == pytest.approx(1.0) and same["row_cosine"] == pytest.approx(1.0)
    Q = torch.linalg.qr(torch.randn(32, 32, dtype=torch.float64)).Q
    a, b = diag_matrix([3, 2, 1], 32) @ Q, diag_matrix([0, 0, 0, 3, 2, 1], 32)[3:] @ Q  # orthogonal row spaces
    assert A.prompt_similarity(a, b, r=3)["subspace"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        A.prompt_similarity(X, X[:3])


def test_a_shared_mean_makes_unrelated_prompts_look_alike_until_it_is_removed():
    g = torch.Generator().manual_seed(0)
    d, r = 64, 2
    mean = 10 * torch.randn(d, generator=g, dtype=torch.float64)
    a = torch.randn(20, d, generator=g, dtype=torch.float64) + mean  # two unrelated prompts around one mean
    b = torch.randn(20, d, generator=g, dtype=torch.float64) + mean
    assert A.prompt_similarity(a, b, r=r)["subspace"] > 0.45  # the common mean is one shared direction
    centred = A.prompt_similarity(a, b, r=r, center=mean)["subspace"]
    assert centred < 0.25 and A.random_subspace_similarity(r, d) == r / d
    draws = [A.prompt_similarity(torch.randn(20, d, generator=g, dtype=torch.float64),
                                 torch.randn(20, d, generator=g, dtype=torch.float64), r=r)["subspace"]
             for _ in range(200)]  # random subspaces: the expected similarity is r / d
    assert sum(draws) / len(draws) == pytest.approx(r / d, rel=0.25)


def test_parameter_table_counts_and_kv_bytes(tiny_llama):
    methods = {"PT": build_method("prompt_tuning", tiny_llama, prompt_len=4),
               "LoPT-2": build_method("lopt2", tiny_llama, prompt_len=4, rank=1),
               "prefix": build_method("prefix_tuning", tiny_llama, prompt_len=4, reparam_dim=8)}
    table = A.parameter_table(methods, tiny_llama)
    assert table.loc["PT", "trainable"] == 4 * 64 and table.loc["LoPT-2", "trainable"] == 2 * 64
    assert table.loc["prefix", "stored"] == 4 * 2 * 2 * 2 * 16 < table.loc["prefix", "trainable"]
    assert (table["KV bytes per request (bf16)"] == 4 * 2 * 2 * 2 * 16 * 2).all()
    assert table.loc["PT", "trainable / backbone (%)"] == pytest.approx(100 * 256 / tiny_llama.num_parameters)


def test_at_budget_finds_the_nearest_size_by_brute_force(tiny_llama):
    """The size nearest the budget in ratio (checked against every candidate built by hand), the counts the built
    method has, and a clear error when nothing comes within the tolerance."""
    d = tiny_llama.hidden_size  # 64: LoPT-1 at n = 6 trains r (6 + 64)
    got = A.at_budget("lopt1", tiny_llama, 300, {"rank": range(1, 7)}, prompt_len=6)
    sizes = {r: build_method("lopt1", tiny_llama, prompt_len=6, rank=r).trainable_parameters() for r in range(1, 7)}
    assert sizes[4] == 4 * (6 + d) == got["trainable_parameters"] == got["stored_parameters"]
    assert got["options"] == {"prompt_len": 6, "rank": min(sizes, key=lambda r: abs(math.log(sizes[r] / 300)))}
    both = A.at_budget("residual_prompt_tuning", tiny_llama, 2000, {"prompt_len": range(1, 30)}, bottleneck=2)
    built = build_method("residual_prompt_tuning", tiny_llama, **both["options"])
    assert (both["trainable_parameters"], both["stored_parameters"]) == (built.trainable_parameters(),
                                                                         built.stored_parameters())
    assert both["stored_parameters"] == both["options"]["prompt_len"] * d < both["trainable_parameters"]
    with pytest.raises(ValueError, match="no configuration within 20% of 10"):
        A.at_budget("prompt_tuning", tiny_llama, 10, {"prompt_len": range(1, 4)})


def test_family_at_budget_sizes_each_method_or_leaves_it_out(tiny_llama):
    """Every method of the family at one budget: built with its options it trains what was said, within 20%; LoPT
    keeps n = 20; DePT's rank was set first (to about half the budget); one that cannot fit is None."""
    sizes = A.family_at_budget(tiny_llama, 1000)
    assert set(sizes) == set(A.FAMILY_SIZES)
    for name, c in sizes.items():
        if c is not None:
            assert build_method(name, tiny_llama, **c["options"]).trainable_parameters() == c["trainable_parameters"]
            assert abs(math.log(c["trainable_parameters"] / 1000)) <= math.log(1.2), (name, c)
    assert sizes["lopt1"]["options"]["prompt_len"] == 20 and sizes["prompt_tuning"]["options"] == {"prompt_len": 16}
    assert sizes["dept"]["options"]["rank"] == 1  # r (S + d) = 320 per rank on tiny-llama: rank 1 is nearest 500
    assert A.family_at_budget(tiny_llama, 10)["prompt_tuning"] is None  # one token is 64


def test_log_spaced_ranks():
    assert A.log_spaced(20) == [1, 2, 4, 8, 16, 20] and A.log_spaced(8) == [1, 2, 4, 8]
