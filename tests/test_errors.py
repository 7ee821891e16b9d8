"""User-facing error helpers: the "did you mean" hint and the registries that name it."""

from __future__ import annotations

import pytest

from facerestore.errors import InputError, did_you_mean


@pytest.mark.parametrize(
    ("word", "known", "expected"),
    [
        ("psnrr", ["psnr", "ssim"], "psnr"),  # one letter too many
        ("PSNR", ["psnr", "ssim"], "psnr"),  # case ignored, spelling of the known name returned
        ("--fidelty", ["--fidelity", "--blend"], "--fidelity"),
        ("mobilestylegan", ["mobilestylegan-ffhq-1024", "mobileface"], "mobilestylegan-ffhq-1024"),  # unique prefix
        ("prior_sft", ["ispl", "prior-sft"], "prior-sft"),
        ("--thread", ["--method", "--steps"], None),  # shares only "--" and "th": not a near miss
        ("zzz", ["psnr"], None),
        ("psnr", [], None),
    ],
)
def test_did_you_mean(word, known, expected):
    assert did_you_mean(word, known) == ("" if expected is None else f" (did you mean {expected}?)")


def test_registries_name_the_nearest_known_name():
    from facerestore.degrade.tasks import get_task
    from facerestore.methods.registry import get_spec as method_spec
    from facerestore.metrics.registry import get_spec
    from facerestore.zoo import get_entry

    for call, word, hint in (
        (get_spec, "psnrr", "(did you mean psnr?)"),
        (get_task, "sr4", "(did you mean sr4x?)"),
        (method_spec, "prior_sft", "(did you mean prior-sft?)"),
    ):
        with pytest.raises(InputError, match="unknown") as exc:
            call(word)
        assert hint in str(exc.value), (word, str(exc.value))
    with pytest.raises(KeyError) as exc:
        get_entry("mobilestylegan")
    assert "(did you mean mobilestylegan-ffhq-1024?)" in str(exc.value)
