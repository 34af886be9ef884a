"""The fast suite (``-m "not slow and not notebook"``) runs on the tiny backbones only: conftest.py fails a
test without a slow marker that loads the embedded 135M backbone."""
import pytest

from lopt_core.model import load_backbone


def test_a_fast_test_cannot_load_the_embedded_backbone():
    with pytest.raises(pytest.fail.Exception, match="loads the embedded backbone .*mark it @pytest.mark.slow"):
        load_backbone("embedded", device="cpu")
