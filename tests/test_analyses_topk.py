"""topk: known top images and patch coordinates, batch-size independence, one pass for all layers."""

import pytest
import torch
from analyses_models import PIXELS, VALUES, dot_net, dot_split, one_thread, random_net, random_split, subject  # noqa: F401
from torch import nn

from convlens.analyses import ClassNorms, Stats, TopK, analyze
from convlens.analyses.stream import stream
from convlens.analyses.topk import patch, peaks
from convlens.errors import LayerError
from convlens.models import ReceptiveField


def by_value(k):
    return sorted(range(len(VALUES)), key=lambda n: -VALUES[n])[:k]


def test_top_images_locations_and_patches_are_the_known_ones():
    out = TopK(k=4)(subject(dot_net(), dot_split()))
    conv1, conv2 = out["layers"]["conv1"], out["layers"]["conv2"]
    assert conv1["measured_at"] == "conv1" and conv1["receptive_field"] == {"size": 3, "jump": 1, "start": -1}
    assert conv2["receptive_field"] == {"size": 8, "jump": 2, "start": -3}

    f0 = conv1["filters"][0]  # copies the image: the brightest pixels win, found where they are
    top = by_value(4)
    assert f0["positions"] == top
    assert f0["indices"] == [1000 + n for n in top]
    assert f0["scores"] == pytest.approx([VALUES[n] / 255 for n in top])
    assert f0["locations"] == [list(PIXELS[n]) for n in top]
    r, c = PIXELS[top[0]]  # image 3, pixel (1, 4): a 3x3 window clipped by the right border
    assert (r, c) == (1, 4) and f0["windows"][0] == [0, 3, 3, 6]
    assert f0["labels"] == [n % 3 for n in top]
    assert f0["class_histogram"] == [sum(1 for n in top if n % 3 == k) for k in range(3)]
    assert f0["max"] == pytest.approx(1.0) and f0["mean"] == pytest.approx(sum(VALUES[n] for n in top) / 4 / 255)

    # conv1 f1 negates the image: every image peaks at 0 -> ties go to the earliest images, and the
    # location is the first zero in row-major order ((0, 1) for image 0 whose (0, 0) is lit)
    f1 = conv1["filters"][1]
    assert f1["positions"] == [0, 1, 2, 3] and f1["scores"] == [0.0] * 4
    assert f1["locations"] == [[0, 1], [0, 0], [0, 0], [0, 0]]

    # conv2 f0 sees conv1 f0 through a 2x2 max-pool: the maximum moves to (r // 2, c // 2), and the
    # receptive field there (8 px, step 2, from -3) contains the bright pixel
    g0 = conv2["filters"][0]
    assert g0["positions"] == top
    for n, (i, j), (t, b, left, right) in zip(top, g0["locations"], g0["windows"]):
        r, c = PIXELS[n]
        assert (i, j) == (r // 2, c // 2)
        assert (t, b, left, right) == (max(-3 + 2 * i, 0), min(5 + 2 * i, 6), max(-3 + 2 * j, 0), min(5 + 2 * j, 6))
        assert t <= r < b and left <= c < right


def test_patch_keeps_the_field_size_and_greys_the_padding():
    img = torch.arange(36, dtype=torch.float32).view(1, 6, 6).numpy()
    p = patch(img, ReceptiveField(3, 1, -1), 0, 0)
    assert p.shape == (1, 3, 3)
    assert (p[0, 0] == 0.5).all() and (p[0, :, 0] == 0.5).all()
    assert p[0, 1:, 1:].tolist() == [[0, 1], [6, 7]]


def test_mean_score_and_activation_reading():
    out = TopK(k=3, score="mean", at="act", layers=["conv1"])(subject(dot_net(), dot_split()))
    f0 = out["layers"]["conv1"]["filters"][0]
    assert out["layers"]["conv1"]["measured_at"] == "relu1"
    assert f0["positions"] == by_value(3)
    assert f0["scores"] == pytest.approx([VALUES[n] / 255 / 36 for n in by_value(3)])


@pytest.mark.parametrize("bs", [1, 3, 7, 64])
def test_hand_model_results_do_not_depend_on_the_batch_size(bs):
    ref = TopK(k=5)(subject(dot_net(), dot_split(), batch_size=12))
    out = TopK(k=5)(subject(dot_net(), dot_split(), batch_size=bs))
    assert out["layers"] == ref["layers"]


@pytest.mark.parametrize("score", ["max", "mean", "sum"])
def test_random_model_matches_brute_force_for_every_batch_size(score):
    model, split = random_net(), random_split(60)
    x = split.images.float() / 255
    with torch.no_grad():
        fmap = model.bn2(model.conv2(model.pool1(model.relu1(model.bn1(model.conv1(model.input(x)))))))
    scores = torch.zeros(fmap.shape[:2])  # (N, C), one image and filter at a time
    for n in range(fmap.shape[0]):
        for c in range(fmap.shape[1]):
            values = [float(v) for v in fmap[n, c].flatten()]
            scores[n, c] = {"max": max(values), "mean": sum(values) / len(values), "sum": sum(values)}[score]
    outs = [TopK(k=7, layers=["conv2"], score=score)(subject(model, split, batch_size=bs)) for bs in (1, 8, 13, 60)]
    assert all(o["score"] == score for o in outs)
    results = [o["layers"]["conv2"] for o in outs]
    for f in range(fmap.shape[1]):
        expected = sorted(range(60), key=lambda n: (-float(scores[n, f]), n))[:7]
        for r in results:
            assert r["filters"][f]["positions"] == expected
            assert r["filters"][f]["scores"] == pytest.approx(
                [float(scores[n, f]) for n in expected], rel=1e-5, abs=1e-6
            )
            # where each top image's map is largest (the first maximum, row-major), in Python
            w = fmap.shape[3]
            flat = [[float(v) for v in fmap[n, f].flatten()] for n in expected]
            assert r["filters"][f]["locations"] == [list(divmod(m.index(max(m)), w)) for m in flat]


class Count(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def test_one_pass_for_all_layers_and_all_streaming_analyses():
    model, split = random_net(), random_split(50)
    first, head = Count(), Count()
    model.input, model.fc1 = nn.Sequential(first, model.input), nn.Sequential(head, model.fc1)
    s = subject(model, split, batch_size=16)
    results = analyze(s, ["stats", "classnorms", "topk"], layers=["conv1", "conv2"], k=3)
    assert first.calls == 4  # ceil(50 / 16) batches, one forward each, for three analyses and two layers
    assert head.calls == 0  # the pass stops after the deepest layer read
    assert set(results) == {"stats", "classnorms", "topk"}
    alone = TopK(k=3, layers=["conv1", "conv2"])(subject(model, split, batch_size=50))
    assert alone["layers"] == results["topk"]["layers"]


def test_non_spatial_layer_is_refused_with_the_layers_that_work():
    with pytest.raises(LayerError) as e:
        TopK(layers=["fc1"])(subject(dot_net(), dot_split()))
    msg = str(e.value)
    assert "fc1" in msg and "conv1" in msg and "pool1" in msg


def test_streaming_readers_can_share_a_probe():
    s = subject(dot_net(), dot_split())
    readers = [TopK(k=2, at="act"), Stats(), ClassNorms(at="act")]
    from convlens.analyses import inference

    with inference(s.model):
        stream(s, readers)
    assert readers[0].finish(s)["layers"]["conv2"]["filters"][1]["scores"] == [0.0, 0.0]
    assert readers[1].finish(s)["layers"]["conv2"]["dead"] == [1]


def state_bytes(topk: TopK) -> int:
    return sum(
        t.numel() * t.element_size() for r in topk._running.values() for t in (r.values, r.positions, r.locations)
    )


def test_the_running_state_does_not_grow_with_the_number_of_images():
    model = random_net()
    sizes = {}
    for n in (40, 160):
        topk = TopK(k=5, layers=["conv1", "conv2"])
        topk(subject(model, random_split(n), batch_size=16))
        sizes[n] = state_bytes(topk)
    channels = model.conv1.out_channels + model.conv2.out_channels
    assert sizes[40] == sizes[160] == channels * 5 * (4 + 8 + 8)  # filters x k x (score, position, location)


@pytest.mark.parametrize("score", ["max", "mean", "sum"])
def test_peaks_read_either_memory_layout_and_give_ties_to_the_first_position(score):
    fmap = torch.randn(3, 5, 4, 6)
    fmap[0, 1] = 2.0  # every position ties: the first wins
    fmap[1, 2, 3, 5] = fmap[1, 2, 0, 4] = 9.0  # two maxima: the earlier in row-major order
    plain = peaks(fmap, score)
    last = peaks(fmap.contiguous(memory_format=torch.channels_last), score)
    assert torch.equal(plain[1], last[1]) and torch.allclose(plain[0], last[0])
    assert plain[1][0, 1] == 0 and plain[1][1, 2] == 4
    expected = {"max": fmap.amax((2, 3)), "mean": fmap.mean((2, 3)), "sum": fmap.sum((2, 3))}[score]
    assert torch.allclose(plain[0], expected)
    assert torch.equal(plain[1], fmap.flatten(2).argmax(2))
