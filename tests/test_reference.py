"""Reference suite: every analysis and explanation against an independent computation.

Dataset-level analyses (topk, stats, classnorms, ablate) are recomputed by a plain forward-hook
loop written here; per-image methods are compared with Captum where the rules coincide
(saliency, Grad-CAM and occlusion always; guided backprop and deconvnet on ReLU nets) and, for
guided backprop and deconvnet on a GELU net, with the documented rule (README, "explain rules")
applied by a layer-by-layer backward pass written here. Each runs on a tiny ReLU net and a
tiny GELU net with random weights, and (slow, with the shared CIFAR-10 copy) on a small CSCI-611
net trained for one epoch.

Tolerances: float32 rounding. Scores and means are compared to 1e-5 relative (a float32 sum over
a few hundred values); gradients to 1e-5 relative and 1e-6 absolute; counts, indices, accuracies
and confusion matrices exactly.
"""

from __future__ import annotations

import pytest
import torch
from analyses_models import fit_head, one_thread, random_split, subject  # noqa: F401
from conftest import CIFAR_TAR, needs_cifar
from torch import nn

from convlens.analyses import Ablate, ClassNorms, Stats, Subject, TopK
from convlens.explain import Deconvnet, GradCAM, GuidedBackprop, Occlusion, Saliency
from convlens.explain.occlusion import spread_to_pixels
from convlens.models import build

captum = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore:.*(require gradients|backward hooks on ReLU).*:UserWarning")

CLOSE = dict(atol=1e-6, rtol=1e-5)  # float32 gradients and scores


def tiny(act: str) -> nn.Module:
    """conv-bn-act-pool, conv-bn-act, global average, linear: 3x8x8 in, 4 classes out."""
    torch.manual_seed(5)
    m = build(
        [
            {"type": "conv", "out": 4, "kernel": 3, "padding": 1},
            "bn",
            act,
            {"type": "maxpool"},
            {"type": "conv", "out": 6, "kernel": 3, "padding": 1},
            "bn",
            act,
            {"type": "globalpool", "mode": "avg"},
            {"type": "linear", "out": "classes"},
        ],
        (3, 8, 8),
        4,
    )
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.002, 0.01)
                mod.weight.uniform_(-1.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return m.eval()


# -- the plain loop ------------------------------------------------------------------------------


def forward_hooked(model: nn.Module, x: torch.Tensor, names: list[str], edit: dict[str, list[int]] | None = None):
    """Logits and the outputs of ``names``; ``edit`` zeroes channels of module outputs."""
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name):
        def hook(_m, _i, out):
            if edit and name in edit:
                out = out.clone()
                out[:, edit[name]] = 0
            store[name] = out.detach().clone()
            return out

        return hook

    for n in set(names) | set(edit or {}):
        handles.append(modules[n].register_forward_hook(keep(n)))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits, store


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def pixels(s: Subject) -> torch.Tensor:
    return s.split.images.float() / 255


def check_dataset_analyses(s: Subject) -> None:
    model, x, labels = s.model, pixels(s), s.split.labels
    k = len(s.classes)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    last = convs[-1]

    # topk: the k images with the largest maximum of each filter, measured where it says
    top = TopK(layers=convs, k=5)(s)
    for layer, info in top["layers"].items():
        _, out = forward_hooked(model, x, [info["measured_at"]])
        score = out[info["measured_at"]].amax((2, 3))  # (N, C)
        for f in info["filters"]:
            ref = torch.sort(score[:, f["filter"]], descending=True, stable=True)
            assert f["positions"] == ref.indices[:5].tolist()
            torch.testing.assert_close(torch.tensor(f["scores"]), ref.values[:5], **CLOSE)
            assert f["labels"] == labels[ref.indices[:5]].tolist()

    # stats: moments before the activation, activity after it
    st = Stats(layers=convs)(s)
    for layer, info in st["layers"].items():
        pre, post = info["measured_at"]["pre"], info["measured_at"]["post"]
        _, out = forward_hooked(model, x, [pre, post])
        a, z = out[pre].double(), out[post].double()
        torch.testing.assert_close(f64(info["mean"]), a.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            f64(info["std"]), a.permute(1, 0, 2, 3).flatten(1).std(1, correction=0), rtol=1e-4, atol=1e-6
        )
        torch.testing.assert_close(f64(info["max"]), a.amax((0, 2, 3)), rtol=1e-6, atol=0)
        torch.testing.assert_close(f64(info["min"]), a.amin((0, 2, 3)), rtol=1e-6, atol=0)
        torch.testing.assert_close(f64(info["active_fraction"]), (z > 0).double().mean((0, 2, 3)))
        torch.testing.assert_close(f64(info["images_active"]), (z > 0).flatten(2).any(2).double().mean(0))

    # classnorms: the mean over each class's images of ||map||_2 / sqrt(positions)
    cn = ClassNorms(layers=convs, norm="l2")(s)
    for layer, info in cn["layers"].items():
        _, out = forward_hooked(model, x, [info["measured_at"]])
        o = out[info["measured_at"]].double()
        norms = o.flatten(2).norm(dim=2) / (o.shape[2] * o.shape[3]) ** 0.5  # (N, C)
        ref = torch.stack(
            [
                norms[labels == c].mean(0) if (labels == c).any() else torch.full((o.shape[1],), torch.nan)
                for c in range(k)
            ],
            1,
        )
        torch.testing.assert_close(
            torch.tensor(info["class_means"], dtype=torch.float64), ref, rtol=1e-5, atol=1e-7, equal_nan=True
        )

    # ablate: silencing = the channel is 0 after its batch norm (and so after the activation)
    bn = {n: convs[i].replace("conv", "bn") for i, n in enumerate(convs)}
    ab = Ablate(filters={last: [0, 2]}, layers=[last])(s)

    def summary(logits):
        pred = logits.argmax(1)
        cm = torch.zeros(k, k, dtype=torch.long)
        cm.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
        support = cm.sum(1)
        acc = [float(cm[c, c]) / float(support[c]) if support[c] else None for c in range(k)]
        return cm.tolist(), acc

    before, _ = forward_hooked(model, x, [])
    after, _ = forward_hooked(model, x, [], edit={bn[last]: [0, 2]})
    for when, logits in (("before", before), ("after", after)):
        cm, acc = summary(logits)
        assert ab["set"][when]["confusion"] == cm
        got = ab["set"][when]["per_class_accuracy"]
        assert [g is None for g in got] == [a is None for a in acc]
        torch.testing.assert_close(
            torch.tensor([g or 0.0 for g in got]), torch.tensor([a or 0.0 for a in acc]), atol=1e-6, rtol=0
        )
    r = ab["rank"][last]
    n = len(labels)
    for f in range(model.get_submodule(last).out_channels):
        logits, _ = forward_hooked(model, x, [], edit={bn[last]: [f]})
        assert r["accuracy"][f] == pytest.approx(float((logits.argmax(1) == labels).sum()) / n, abs=1e-9)


# -- per-image methods ---------------------------------------------------------------------------

ACTS = (nn.ReLU, nn.GELU)


def rule_by_hand(model: nn.Module, x: torch.Tensor, t: torch.Tensor, rule: str) -> torch.Tensor:
    """The documented rules, applied by a backward pass through the layers one at a time: every
    layer passes back its vector-Jacobian product, except the activations: guided relu(g) * f'(z),
    deconv relu(g), saliency g * f'(z)."""
    inputs, h = [], x
    with torch.no_grad():
        for layer in model.children():
            inputs.append(h)
            h = layer(h)
    g = torch.nn.functional.one_hot(t, h.shape[1]).float()
    for layer, z in zip(reversed(list(model.children())), reversed(inputs)):
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            out = layer(z)
        if isinstance(layer, ACTS) and rule != "saliency":
            (d,) = torch.autograd.grad(out, z, torch.ones_like(out))  # f'(z), element-wise
            g = g.clamp(min=0) * d if rule == "guided" else g.clamp(min=0)
        else:
            (g,) = torch.autograd.grad(out, z, g)
    return g


def check_per_image(model: nn.Module, x: torch.Tensor, t: torch.Tensor, relu: bool) -> None:
    ours = {
        "saliency": Saliency(model).attribute(x, t),
        "guided": GuidedBackprop(model).attribute(x, t),
        "deconv": Deconvnet(model).attribute(x, t),
    }
    ref = captum.Saliency(model).attribute(x.clone(), target=t, abs=False)
    torch.testing.assert_close(ours["saliency"], ref, **CLOSE)
    if relu:  # Captum's rules are ReLU rules: they coincide with ours on ReLU nets only
        torch.testing.assert_close(ours["guided"], captum.GuidedBackprop(model).attribute(x.clone(), target=t), **CLOSE)
        torch.testing.assert_close(ours["deconv"], captum.Deconvolution(model).attribute(x.clone(), target=t), **CLOSE)
    for rule, got in ours.items():
        torch.testing.assert_close(got, rule_by_hand(model, x, t, rule), **CLOSE)
        assert got.abs().sum() > 0
    assert not torch.allclose(ours["guided"], ours["saliency"]) and not torch.allclose(ours["deconv"], ours["saliency"])

    gc = GradCAM(model, upsample=False)  # its default layer: the last conv block's output
    cam = gc.attribute(x, t)
    layer_cam = captum.LayerGradCam(model, model.get_submodule(gc.layer))
    ref = layer_cam.attribute(x.clone(), target=t, relu_attributions=True)
    torch.testing.assert_close(cam, ref[:, 0], **CLOSE)

    h, w = x.shape[2:]
    win, stride = max(2, h // 4), max(1, h // 8)
    occ = Occlusion(model, win, stride, fill="gray")
    maps = occ.attribute(x, t)
    drop = occ.details["base"][torch.arange(len(t)), t].view(-1, 1, 1) - maps
    ref = captum.Occlusion(lambda v: torch.softmax(model(v), 1)).attribute(
        x.clone(),
        sliding_window_shapes=(x.shape[1], win, win),
        strides=(x.shape[1], stride, stride),
        baselines=0.5,
        target=t,
        perturbations_per_eval=16,
    )
    torch.testing.assert_close(spread_to_pixels(drop, win, stride, (h, w)), ref.sum(1) / x.shape[1], atol=1e-5, rtol=0)


# -- the tiny nets -------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_dataset_analyses_match_a_plain_hook_loop(act):
    split = random_split(40)
    model = fit_head(tiny(act), split)
    check_dataset_analyses(subject(model, split, batch_size=16))


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_per_image_methods_match_captum_and_the_documented_rules(act):
    model = tiny(act)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    check_per_image(model, x, torch.tensor([0, 3, 1, 2]), relu=act == "relu")


# -- a trained CIFAR-10 net ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    from convlens.train import train

    out = tmp_path_factory.mktemp("runs") / "csci611"
    cfg = {
        "name": "ref",
        "seed": 0,
        "data": {
            "name": "cifar10",
            "root": str(CIFAR_TAR),
            "train_subset": 2000,
            "test_subset": 1000,
            "val_fraction": 0.1,
        },
        "model": {"preset": "csci611", "options": {"width": 8, "hidden": 32}},
        "train": {"epochs": 1, "batch_size": 100, "threads": 2, "optimizer": {"name": "sgd", "lr": 0.05}},
    }
    train(cfg, out, echo=lambda m: None)
    return out


@pytest.mark.slow
@needs_cifar
def test_trained_cifar_net_matches_the_references(cifar_run):
    s = Subject.from_run(cifar_run, "test", limit=200, progress=False, figures=False)
    assert s.subset["how"] == "stratified" and s.subset["per_class"] == [20] * 10
    check_dataset_analyses(s)
    x, t = pixels(s)[::50], s.split.labels[::50]
    check_per_image(s.model, x, t, relu=True)
