import pytest
import torch
from torch import nn

from hepred.errors import HepredError
from hepred.saliency import _gradcam


class QuadrantModel(nn.Module):
    """Its logit is the mean of a feature map over the top-left quadrant only."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Sequential(*[nn.Identity()] * 4, nn.Conv2d(3, 1, 1, bias=False))
        nn.init.ones_(self.blocks[4].weight)

    def forward(self, x):
        return self.blocks(x)[:, :, :8, :8].mean(dim=(2, 3))


def test_gradcam_is_highest_where_the_evidence_is_and_zero_where_there_is_none():
    images = torch.zeros(2, 3, 16, 16)
    images[:, :, :8, :8] = 1.0
    maps = _gradcam(QuadrantModel(), images)
    assert maps.shape == (2, 16, 16)
    assert maps[:, :8, :8].min() == pytest.approx(1.0) and maps[:, 8:, 8:].max() == pytest.approx(0.0)


def test_a_model_without_the_target_layer_is_one_clear_error():
    with pytest.raises(HepredError, match="no layer 'blocks.4'"):
        _gradcam(nn.Sequential(nn.Conv2d(3, 1, 1)), torch.zeros(1, 3, 8, 8))
