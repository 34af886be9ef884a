"""The batch order: a pure function of (seed, step, rank, world_size), grouped by length by default."""
import random

import pytest

from lopt_core.data.sampler import batch_indices, epoch_order, padding_efficiency

_rng = random.Random(0)
LENGTHS = tuple(_rng.randint(5, 120) for _ in range(1000))


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["shuffle", "grouped"])
def test_every_epoch_visits_every_row_once(lengths):
    seen = [i for step in range(125) for i in batch_indices(1000, 8, seed=3, step=step, lengths=lengths)]
    assert sorted(seen) == list(range(1000))
    assert batch_indices(1000, 8, 3, 7, lengths=lengths) == batch_indices(1000, 8, 3, 7, lengths=lengths)
    assert batch_indices(1000, 8, 3, 7, lengths=lengths) != batch_indices(1000, 8, 4, 7, lengths=lengths)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["shuffle", "grouped"])
def test_ranks_split_the_global_batch_of_a_single_process(lengths):
    """Two processes of 4 rows see exactly the rows one process of 8 sees, step by step."""
    for step in range(30):
        one = batch_indices(1000, 8, 1, step, lengths=lengths)
        two = batch_indices(1000, 4, 1, step, 0, 2, lengths) + batch_indices(1000, 4, 1, step, 1, 2, lengths)
        assert one == two
    with pytest.raises(ValueError, match="rank must be in"):
        batch_indices(1000, 4, 1, 0, rank=2, world_size=2)


def test_grouping_by_length_pads_less_and_keeps_the_batches_in_random_order():
    batches = {name: [batch_indices(1000, 8, 0, s, lengths=lengths) for s in range(125)]
               for name, lengths in (("plain", None), ("grouped", LENGTHS))}
    plain, grouped = (padding_efficiency(list(LENGTHS), batches[k]) for k in ("plain", "grouped"))
    assert plain < 0.65 and grouped > 0.95, (plain, grouped)
    longest = [max(LENGTHS[i] for i in b) for b in batches["grouped"]]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)  # not one long sorted run
    assert epoch_order(1000, 8, 0, 0, LENGTHS) != epoch_order(1000, 8, 0, 1, LENGTHS)
