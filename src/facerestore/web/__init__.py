"""``facerestore serve``: a web page (Gradio, the ``web`` extra) over the same pipeline as ``facerestore restore``.

- :mod:`facerestore.web.jobs`: everything a request does, without Gradio: upload limits, the per-browser-session
  workspace, one restore job over several photos (``pipeline.restore_photo`` / ``write_photo_json``, the CLI's
  functions), the zip of results, one-line errors;
- :mod:`facerestore.web.app`: the Gradio page and the server (loopback bind, bounded queue, cleanup).

This is the top layer: it may import any other package; nothing imports it but ``cli.serve``. Gradio is
imported only by :mod:`facerestore.web.app`. Docs: docs/web.md.
"""
