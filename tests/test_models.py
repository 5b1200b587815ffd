"""The model registry: shapes, torchvision-compatible names, saving and loading weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siba.errors import SibaError
from siba.models import (create_model, init_from, list_models, load_model, load_weights, model_spec,
                         read_model_metadata, save_model)

BUILTIN = ["fastnet", "resnet18", "resnet34", "vgg16", "vgg19"]
ALL = sorted(list_models())  # every registered model, so a new one is covered too


class NotAWeight:
    """A class a weights-only load must refuse to build."""

    def __init__(self) -> None:
        self.x = 1


def _trained_bn(model: nn.Module, shape=(4, 3, 32, 32), seed: int = 0) -> nn.Module:
    """Run a couple of training-mode passes so BN running stats differ from their init."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(*shape, generator=g))
    return model.eval()


def test_registry_lists_every_model():
    models = list_models()
    assert set(BUILTIN) <= set(models)
    assert all(isinstance(v, str) and v for v in models.values())


@pytest.mark.parametrize("name", ALL)
def test_logits_shape_and_no_normalisation_in_state_dict(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 7) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    sd = model.state_dict()
    assert "mean" not in sd and "std" not in sd
    assert not any(k.endswith((".mean", ".std")) for k in sd)
    assert dict(model.named_buffers())["mean"].shape == (1, 3, 1, 1)
    # the model normalises its [0,1] input itself
    with torch.no_grad():
        manual = model.forward_normalized((x - model.mean) / model.std)
    assert torch.equal(out, manual)
    assert model_spec(model) == {"arch": name, "num_classes": 7, "kwargs": {}}
    assert isinstance(model.classifier_layer(), nn.Linear)
    assert model.classifier_layer().out_features == 7


def test_resnet_keys_follow_torchvision():
    sd18 = create_model("resnet18").state_dict()
    expect = {
        "conv1.weight": (64, 3, 3, 3),
        "bn1.weight": (64,), "bn1.bias": (64,), "bn1.running_mean": (64,), "bn1.running_var": (64,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 3, 3), "layer1.0.bn1.running_var": (64,),
        "layer1.1.conv2.weight": (64, 64, 3, 3),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer2.0.downsample.1.running_mean": (128,),
        "layer3.0.downsample.0.weight": (256, 128, 1, 1),
        "layer4.0.downsample.0.weight": (512, 256, 1, 1), "layer4.1.bn2.weight": (512,),
        "fc.weight": (10, 512), "fc.bias": (10,),
    }
    for k, shape in expect.items():
        assert k in sd18, k
        assert tuple(sd18[k].shape) == shape, k
    assert "layer1.0.downsample.0.weight" not in sd18  # no projection where the shape is kept
    assert "layer2.2.conv1.weight" not in sd18
    # the exact counts of torchvision's resnet18 / resnet34 state_dicts
    assert len(sd18) == 122
    sd34 = create_model("resnet34").state_dict()
    assert len(sd34) == 218
    assert "layer3.5.conv2.weight" in sd34 and "layer3.6.conv2.weight" not in sd34
    assert "layer4.2.bn2.running_var" in sd34


def test_resnet_imagenet_stem_takes_64px():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=5, stem="imagenet").eval()
    assert tuple(model.state_dict()["conv1.weight"].shape) == (64, 3, 7, 7)  # torchvision's shape
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 5)
    with pytest.raises(SibaError, match="bad options"):
        create_model("resnet18", stem="other")


def test_resnet_width_option():
    sd = create_model("resnet18", width=8).state_dict()
    assert tuple(sd["conv1.weight"].shape) == (8, 3, 3, 3)
    assert tuple(sd["fc.weight"].shape) == (10, 64)


def test_vgg_features_indices_match_torchvision_bn():
    m16 = create_model("vgg16")
    f = m16.features
    assert isinstance(f[0], nn.Conv2d) and (f[0].in_channels, f[0].out_channels) == (3, 64)
    assert isinstance(f[1], nn.BatchNorm2d) and f[1].num_features == 64
    assert isinstance(f[2], nn.ReLU)
    assert isinstance(f[3], nn.Conv2d) and (f[3].in_channels, f[3].out_channels) == (64, 64)
    assert isinstance(f[6], nn.MaxPool2d)
    assert isinstance(f[7], nn.Conv2d) and (f[7].in_channels, f[7].out_channels) == (64, 128)
    assert isinstance(f[40], nn.Conv2d) and f[40].out_channels == 512
    assert isinstance(f[43], nn.MaxPool2d)
    assert len(f) == 44  # vgg16_bn
    sd = m16.state_dict()
    assert tuple(sd["features.0.weight"].shape) == (64, 3, 3, 3)
    assert "features.0.bias" in sd  # torchvision's VGG convs have biases
    assert "features.1.running_mean" in sd and "features.41.running_var" in sd
    assert "features.2.weight" not in sd
    m19 = create_model("vgg19")
    assert len(m19.features) == 53  # vgg19_bn
    assert isinstance(m19.features[52], nn.MaxPool2d) and isinstance(m19.features[49], nn.Conv2d)


def test_vgg_imagenet_head():
    model = create_model("vgg16", num_classes=10, head="imagenet", width=0.125).eval()
    sd = model.state_dict()
    assert tuple(sd["classifier.0.weight"].shape) == (4096, 64 * 49)  # torchvision's head over 7×7 pooling
    assert tuple(sd["classifier.6.weight"].shape) == (10, 4096)
    assert model.classifier_layer() is model.classifier[6]
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_create_model_errors():
    with pytest.raises(SibaError, match="nope"):
        create_model("nope")
    with pytest.raises(SibaError, match="num_classes"):
        create_model("fastnet", num_classes=1)
    with pytest.raises(SibaError, match="bad options"):
        create_model("fastnet", depth=3)


@pytest.mark.parametrize("name,kw", [("fastnet", {"widths": (8, 8, 16, 16)}), ("resnet18", {"width": 8}),
                                     ("vgg16", {"width": 0.125})])
def test_save_and_load_roundtrip(tmp_path, name, kw):
    torch.manual_seed(0)
    model = _trained_bn(create_model(name, num_classes=6, **kw))
    path = tmp_path / "m.safetensors"
    save_model(model, path, note="hello", classes=["a"] * 6)
    meta = read_model_metadata(path)
    assert meta["siba_model"]["arch"] == name and meta["note"] == "hello"
    loaded = load_model(path)
    assert type(loaded) is type(model)
    loaded.eval()
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert model_spec(loaded)["kwargs"] == {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    # a fresh model of the same kind gives other outputs: the weights did load
    torch.manual_seed(1)
    fresh = create_model(name, num_classes=6, **kw).eval()
    with torch.no_grad():
        assert not torch.equal(fresh(x), loaded(x))


def test_load_model_checks(tmp_path):
    model = create_model("fastnet", num_classes=4, widths=(8, 8, 8, 8))
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    assert load_model(path, expect_arch="fastnet", expect_classes=4) is not None
    with pytest.raises(SibaError, match="fastnet model, not resnet18"):
        load_model(path, expect_arch="resnet18")
    with pytest.raises(SibaError, match="4 classes"):
        load_model(path, expect_classes=10)
    with pytest.raises(SibaError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(SibaError, match="not found"):
        read_model_metadata(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk" * 10)
    with pytest.raises(SibaError):
        load_model(junk)
    from siba.runtime import save_tensors

    plain = tmp_path / "plain.safetensors"
    save_tensors(plain, model.state_dict())
    with pytest.raises(SibaError, match="no architecture"):
        load_model(plain)
    with pytest.raises(SibaError, match="architecture is unknown"):
        save_model(nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_load_weights_from_torch_pth(tmp_path):
    torch.manual_seed(0)
    src = _trained_bn(create_model("resnet18", num_classes=10, width=8))
    pth = tmp_path / "weights.pth"
    torch.save(src.state_dict(), pth)

    torch.manual_seed(1)
    dst = create_model("resnet18", num_classes=10, width=8)
    assert load_weights(dst, pth) == []
    sd, sd2 = src.state_dict(), dst.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)

    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, wrapped)
    torch.manual_seed(2)
    dst2 = create_model("resnet18", num_classes=10, width=8)
    assert load_weights(dst2, wrapped) == []
    assert torch.equal(dst2.state_dict()["layer3.0.conv1.weight"], sd["layer3.0.conv1.weight"])

    st = tmp_path / "weights.safetensors"
    save_model(src, st)
    dst3 = create_model("resnet18", num_classes=10, width=8)
    assert load_weights(dst3, st) == []
    assert torch.equal(dst3.state_dict()["fc.weight"], sd["fc.weight"])


def test_load_weights_with_another_classifier(tmp_path):
    torch.manual_seed(0)
    src = create_model("resnet18", num_classes=100, width=8)
    pth = tmp_path / "weights.pth"
    torch.save(src.state_dict(), pth)
    dst = create_model("resnet18", num_classes=10, width=8)
    fc_before = dst.fc.weight.detach().clone()
    conv_before = dst.conv1.weight.detach().clone()
    with pytest.raises(SibaError, match="skip_classifier"):
        load_weights(dst, pth)
    assert torch.equal(dst.conv1.weight, conv_before)  # nothing loaded on error
    skipped = load_weights(dst, pth, skip_classifier=True)
    assert sorted(skipped) == ["fc.bias", "fc.weight"]
    assert torch.equal(dst.fc.weight, fc_before)
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    assert torch.equal(dst.layer4[1].bn2.weight, src.layer4[1].bn2.weight)


def test_load_weights_refuses_pickled_objects(tmp_path):
    bad = tmp_path / "evil.pth"
    torch.save({"fc.weight": NotAWeight()}, bad)
    model = create_model("fastnet", num_classes=10, widths=(8, 8, 8, 8))
    with pytest.raises(SibaError, match="weights-only"):
        load_weights(model, bad)
    with pytest.raises(SibaError, match="not found"):
        load_weights(model, tmp_path / "missing.pth")


def test_init_from_a_torchvision_file_keeps_only_the_head_fresh(tmp_path):
    """init_from: every tensor outside the final layer from the file (an ImageNet-shaped head of 1000
    classes stays fresh for 20 classes); a file of another architecture, width or stem is refused
    before anything is loaded."""
    torch.manual_seed(0)
    src = _trained_bn(create_model("resnet18", num_classes=1000, width=8, stem="imagenet"))
    pth = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), pth)
    torch.manual_seed(1)
    dst = create_model("resnet18", num_classes=20, width=8, stem="imagenet")
    fc = dst.fc.weight.detach().clone()
    info = init_from(dst, pth)
    assert info["fresh"] == ["fc.weight", "fc.bias"]
    assert info["loaded"] == len(dst.state_dict()) - 2
    sd, own = src.state_dict(), dst.state_dict()
    assert all(torch.equal(sd[k], own[k]) for k in own if not k.startswith("fc."))
    assert torch.equal(dst.fc.weight, fc)
    # the same number of classes: the head loads too
    same = create_model("resnet18", num_classes=1000, width=8, stem="imagenet")
    assert init_from(same, pth)["fresh"] == []
    assert torch.equal(same.fc.weight, src.fc.weight)
    # VGG: torchvision's three-layer classifier under a one-layer CIFAR head is the head, left fresh
    vgg = create_model("vgg16", num_classes=1000, width=0.125, head="imagenet")
    vpth = tmp_path / "vgg16_bn.pth"
    torch.save(vgg.state_dict(), vpth)
    cifar_head = create_model("vgg16", num_classes=20, width=0.125)
    assert init_from(cifar_head, vpth)["fresh"] == ["classifier.weight", "classifier.bias"]
    assert torch.equal(cifar_head.features[0].weight, vgg.features[0].weight)


@pytest.mark.parametrize("model_kw,match", [
    ({"width": 8, "stem": "cifar"}, r"conv1\.weight is \(8, 3, 7, 7\) there, \(8, 3, 3, 3\) here"),
    ({"width": 16, "stem": "imagenet"}, r"conv1\.weight is \(8, 3, 7, 7\) there, \(16, 3, 7, 7\) here"),
])
def test_init_from_refuses_a_file_that_does_not_fit(tmp_path, model_kw, match):
    torch.manual_seed(0)
    pth = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18", num_classes=1000, width=8, stem="imagenet").state_dict(), pth)
    dst = create_model("resnet18", num_classes=20, **model_kw)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(SibaError, match=match):
        init_from(dst, pth)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing loaded
    with pytest.raises(SibaError, match="it has no features.0.weight"):
        init_from(create_model("vgg16", num_classes=20, width=0.125), pth)
    with pytest.raises(SibaError, match="weights file not found"):
        init_from(dst, tmp_path / "missing.pth")
