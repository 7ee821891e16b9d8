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


def test_quiet_warnings_from_two_threads_leave_the_filters_as_they_were():
    """warnings.catch_warnings in two threads at once (the web app's jobs) can restore each other's "ignore"
    for good; quiet_warnings blocks take turns, so the process's filter list comes back intact."""
    import threading
    import warnings

    from facerestore.errors import quiet_warnings

    before = list(warnings.filters)
    inside_a, release_a, order = threading.Event(), threading.Event(), []

    def a():
        with quiet_warnings():
            order.append("a in")
            inside_a.set()
            release_a.wait(5)
            order.append("a out")

    def b():
        inside_a.wait(5)
        with quiet_warnings(RuntimeWarning):
            order.append("b in")
            warnings.warn("quiet", RuntimeWarning, stacklevel=1)  # ignored here, raises nothing
        order.append("b out")

    ta, tb = threading.Thread(target=a), threading.Thread(target=b)
    ta.start()
    tb.start()
    inside_a.wait(5)
    release_a.set()
    ta.join(5)
    tb.join(5)
    assert order == ["a in", "a out", "b in", "b out"]  # b waited for a's block to end
    assert warnings.filters == before
    with pytest.warns(UserWarning, match="still heard"):  # nothing left silenced
        warnings.warn("still heard", UserWarning, stacklevel=1)
