"Encoders: the default's ImageNet weights are real (it recognises packaged photos), every encoder gives L × D, frozen by default."
import pytest, torch
from PIL import Image
from skimage import data as skdata
from show_attend_tell.encoder import get_encoder, efficientnet_lite0_imagenet, lite0_weights, EncoderError, ENCODERS, LITE0_MEAN, LITE0_STD
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


@pytest.mark.parametrize('name', list(ENCODERS))
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
    with pytest.raises(EncoderError, match=r"_fc.weight \(1000, 1280\) does not fit classifier.weight \(10, 1280\)"): lite0_weights(wrong)
    with pytest.raises(EncoderError, match="296 tensors, the timm model has 386"):
        lite0_weights(timm.create_model('tf_efficientnet_lite1', pretrained=False))
