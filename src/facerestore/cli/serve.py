"""`facerestore serve`: a web page for restoring photos and videos (Gradio; ``pip install "facerestore[web]"``).

The page calls the functions ``facerestore restore`` calls (``pipeline.restore_photo``, ``write_photo_json``,
``video.restore_video``) and offers the registry's methods and weights (with their licences), fidelity, blend,
upscale, detector, quality gate, paste mask, background upsampler, output format and reference photos; it shows
before/after of each face and of the whole photo, the per-face identity report, a restored video in a player,
and the results to download one by one or as a zip. It binds to loopback unless ``--host`` says otherwise,
limits uploads in bytes, pixels and video frames, runs ``--concurrency`` jobs at once with at most
``--queue-size`` waiting (past that the page says the server is busy), and removes each session's files when its
page is closed and everything when the server stops. Docs: docs/web.md.
"""

from __future__ import annotations

import argparse

HELP = "serve a web page for restoring photos and videos (Gradio; binds to 127.0.0.1 by default)"
EXAMPLES = """\
  facerestore serve                                  # then open http://127.0.0.1:7860
  facerestore serve --port 8080 --max-upload-mb 10 --max-pixels 12000000
  facerestore serve --device cuda --concurrency 2 --queue-size 8
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from facerestore.web.jobs import DEFAULT_MAX_PIXELS, DEFAULT_MAX_VIDEO_FRAMES

    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes the page, "
                   "which has no login, to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload, per file (default 25)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest image read or written, in pixels, input and output (default {DEFAULT_MAX_PIXELS}: "
                   "a 24 MP photo at upscale 1, 6 MP at upscale 2)")
    p.add_argument("--max-files", type=int, default=16, help="files per job (default 16)")
    p.add_argument("--max-video-frames", type=int, default=DEFAULT_MAX_VIDEO_FRAMES,
                   help=f"most frames of an uploaded video (default {DEFAULT_MAX_VIDEO_FRAMES}: 30 s at 30 frames/s); "
                   "longer videos are refused, so that one job cannot hold a worker for hours (one video per job)")
    p.add_argument("--concurrency", type=int, default=1,
                   help="jobs restored at the same time, one per worker (default 1)")
    p.add_argument("--queue-size", type=int, default=4,
                   help="jobs that may wait for a worker (default 4); past that the page says the server is busy")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--half", action="store_true",
                   help="reduced precision (bf16 on a CPU, fp16 on a GPU) for the methods that support it, the "
                        "others fp32 (restore --list-methods shows each method's; robust-inversion and rls run about "
                        "2x faster in bf16 on a CPU with native bf16)")
    p.add_argument("--max-steps", type=int, default=500,
                   help="most optimisation steps per face a page may ask of the slow methods (default 500)")
    p.add_argument("--method", default="ispl", help="method selected when the page opens (default ispl)")


def run(args: argparse.Namespace) -> int:
    from facerestore.errors import InputError

    try:
        import gradio
    except ImportError:
        gradio = None
    if not hasattr(gradio, "Blocks"):  # absent (or only the leftovers of an uninstall)
        raise InputError('facerestore serve needs Gradio: pip install "facerestore[web]"')
    from facerestore.nn.devices import resolve_device
    from facerestore.web.app import ServeConfig, serve
    from facerestore.web.jobs import Limits

    limits = Limits(max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, max_files=args.max_files,
                    max_video_frames=args.max_video_frames)
    cfg = ServeConfig(host=args.host, port=args.port, limits=limits, concurrency=args.concurrency,
                      queue_size=args.queue_size, device=str(resolve_device(args.device)), half=bool(args.half),
                      max_steps=args.max_steps, default_method=args.method)
    return serve(cfg)
