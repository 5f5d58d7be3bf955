import torch

from graft.training.augment import AugmentSpec, make_augment


def batch(n=16):
    g = torch.Generator().manual_seed(0)
    one = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8, generator=g)
    return one.repeat(n, 1, 1, 1)  # n copies of one image


def test_everything_off_is_no_augmentation():
    assert make_augment(AugmentSpec(), 16) is None
    assert make_augment(None, 16) is None


def test_each_image_draws_its_own_transform():
    for spec in (AugmentSpec(crop_padding=4), AugmentSpec(flip=True), AugmentSpec(trivial_augment=True),
                 AugmentSpec(crop_padding=2, flip=True, trivial_augment=True)):
        torch.manual_seed(0)
        out = make_augment(spec, 16)(batch())
        assert out.dtype == torch.uint8 and out.shape == (16, 3, 16, 16)
        distinct = {bytes(img.numpy().tobytes()) for img in out}
        assert len(distinct) > 1, f"{spec}: the same draw for the whole batch"


def test_draws_follow_the_torch_seed():
    augment = make_augment(AugmentSpec(crop_padding=4, flip=True, trivial_augment=True), 16)
    torch.manual_seed(1)
    a = augment(batch())
    torch.manual_seed(1)
    assert torch.equal(a, augment(batch()))
