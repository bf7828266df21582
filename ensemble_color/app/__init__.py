"""The Gradio 6 web demo: upload a photo, see it colourised, how it was routed and what each expert did.

    demo = build_demo(lambda router: Pipeline.load(router=router))
    demo.launch(**launch_options(AppConfig()))

Or from a shell: ``python app.py`` / ``python -m ensemble_color serve`` (see :func:`add_serve_arguments`).

Design choices (and why):

* The UI is a thin layer over :class:`DemoHandler`, which does all the work and is callable without
  a server, so the tests exercise exactly what the browser gets.
* The default router's pipeline is built in :func:`build_demo` (at start-up, never at import) and
  shared by every request; per-request knobs use ``with_options``/``subset``, which share the
  loaded models. Other routers are loaded once on first use and cached in the demo's
  :class:`PipelineCache` (not module state), because loading a router costs seconds.
* The input is read by :func:`ensemble_color.io.load_image` (event ``preprocess=False``), not by
  Gradio's image decoder: Gradio's decoder raises raw Pillow exceptions on non-images and
  decompression bombs, ours gives the one-line reasons people can act on. Gradio still checks that
  the uploaded path is inside its upload cache before we see it.
* Results are written to a private temporary folder (pruned as it ages, removed at exit); Gradio's
  own upload/result cache lives in ``GRADIO_TEMP_DIR`` and is cleaned by ``delete_cache``. Nothing
  is written to the working directory.
"""

from .handlers import (
    EXAMPLES_DIR,
    AppConfig,
    DemoHandler,
    DemoOutputs,
    DemoVideoOutputs,
    PipelineCache,
    offline_routers,
)
from .layout import (
    add_serve_arguments,
    build_demo,
    config_from_args,
    example_files,
    launch_options,
    legend_html,
    main,
    serve,
)

__all__ = ["EXAMPLES_DIR", "AppConfig", "DemoHandler", "DemoOutputs", "DemoVideoOutputs", "PipelineCache",
           "add_serve_arguments", "build_demo", "config_from_args", "example_files", "launch_options", "legend_html",
           "main", "offline_routers", "serve"]
