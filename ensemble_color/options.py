"""Every option of the pipeline in one place: what is fixed when models load, what may change per call, and the
command-line flags that set them, parsed once for the CLI, the batch engine and the web demo alike.

Why: three front ends that each parse their own flags drift apart (a batch flag that changed nothing, a missing
``--assign``); one parser and one ``options_from_args`` give them the same pixels for the same flags.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .composite import DECODE_ALONE, SUBJECT_CONTEXT_RAMP

#: where networks run
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class LoadOptions:
    """What the models are loaded with: fixed for the life of a :class:`~ensemble_color.pipeline.Pipeline`."""

    experts_dirs: tuple[str | Path, ...] = ()  #: extra plugin folders (after $ENSEMBLE_COLOR_EXPERTS; later wins)
    router: str = "embedded"                  #: router name or folder (``routing.available_routers``)
    device: str = "auto"                      #: auto (CUDA when present), cpu, cuda, cuda:1 ...
    enabled: tuple[str, ...] | None = None    #: use only these experts (None: all found)
    use_shipped: bool = True                  #: include the experts shipped with the package
    router_options: Mapping[str, Any] = field(default_factory=dict)  #: e.g. {"temperature": 1.5}
    #: where the experts run (and the router's segmenter, unless ``router_backend`` says otherwise), one of
    #: :data:`BACKENDS`; fixed when the models load
    backend: str = "torch"
    #: where the router's segmenter runs: one of :data:`BACKENDS`, or "auto" = onnxruntime on CPU when it is
    #: installed, else ``backend``. The Lite0 FPN runs about 2x faster there on every machine measured while
    #: the experts run slower (bench/results/speed.md), so "auto" splits them; the converted graph is cached
    #: (:func:`.backends.ort.cache_dir`). Fixed when the models load
    router_backend: str = "auto"
    threads: int | None = None    #: onnxruntime intra-op threads (None: one per core); torch's are process-wide


@dataclass(frozen=True)
class PipelineOptions:
    """Per-call knobs (cheap to change on a loaded pipeline, ``Pipeline.with_options``); defaults chosen by
    bench/tune_defaults.py on held-out train photos (docs/tuning.md)."""

    work_size: int = 256          #: long side of the working image (router + experts); tuned, docs/tuning.md
    saturation: float = 1.0       #: chroma multiplier applied to the blended ab
    threshold: float = 0.1        #: weight above which a pixel belongs to an expert's crop; tuned
    margin: int = 16              #: crop margin around a region, working pixels
    min_fraction: float = 0.002   #: specialists with less mean weight than this are not run
    fallback_min: float = 0.25    #: the fallback runs only where unclaimed weight exceeds this; tuned
    crop_quantile: float = 0.02   #: crops span the q..1-q quantiles of an expert's weight (ignores specks); tuned
    #: route class -> experts (overrides the manifests). Default: the generalist colours the background
    #: (docs/tuning.md: chosen on held-out train photos and composites by bench/tune_defaults.py's rule)
    assign: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"background": ("generalist",)})
    #: subjects' area (fraction of the frame) from which their experts start / finish taking the background
    #: too (composite.share_context); None = background always goes to its own experts. Default: on
    #: (docs/tuning.md), so a photo of one bird is coloured by the birds expert, surroundings included
    context: tuple[float, float] | None = SUBJECT_CONTEXT_RAMP
    #: expert -> named decoding (:data:`.nets.multihead_unet.DECODINGS`) it runs with *in the blend*, instead of
    #: its manifest's. The generalist's manifest keeps its own rule's choice (alone, on its held-out photos);
    #: colouring backgrounds in this pipeline it decodes as the defaults' rule chose (docs/tuning.md).
    #: Experts named here but not loaded, or without a decoding, are left out; one that cannot change its
    #: decoding (an ONNX graph with another folded in) keeps its own, with a warning.
    decode: Mapping[str, str] = field(default_factory=lambda: {"generalist": "blend 0.75 soft"})
    #: how an expert decodes when it colours a photo alone (see ``alone_share``): "blend" = as ``decode`` says,
    #: "manifest" = as its manifest says, i.e. exactly the expert alone (the generalist's own rule chose that
    #: decoding on its held-out photos). Default "manifest" with ``alone_share`` 0.9, chosen by the defaults'
    #: rule (docs/tuning_alone_share.md: mean L2ab 13.49 vs 13.68 for "blend")
    decode_alone: str = "manifest"
    #: an expert colours a photo "alone" (for ``decode_alone``) when it carries at least this share of the
    #: photo's blend weight; 1.0 = only when no other expert has a region on it (composite.alone_experts)
    alone_share: float = 0.9
    #: look for a halftone screen in each photo's L and low-pass the L the router and experts see when one is
    #: found (:mod:`.descreen`; the output still joins the original L). Default chosen by the rule in
    #: bench/router_oldphotos.py
    descreen: bool = True
    #: how colour hints spread (:func:`.hints.propagate`): "geodesic" (edge-aware distance from each hint),
    #: chosen by bench/hints.py's rule over a screened-Poisson reach (docs/experiments.md)
    hint_method: str = "geodesic"
    max_batch: int = 8            #: crops per expert forward pass
    upsample: str = "guided"      #: "guided" (edge-aware, follows full-res L) or "bilinear"


#: ``--no-context``: context sharing off (``PipelineOptions.context = None``)
NO_CONTEXT: tuple[float, ...] = ()


def parse_context(values: Sequence[float]) -> tuple[float, float]:
    """``--context LO HI`` -> (lo, hi), checked: 0 <= LO < HI <= 1 (fractions of the frame)."""
    lo, hi = (float(v) for v in values)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"--context needs 0 <= LO < HI <= 1 (fractions of the frame), got {lo} {hi}")
    return lo, hi


def _parse_pairs(items: Iterable[str], flag: str, expected: str) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` -> ``{KEY: VALUE}`` (stripped); a one-line error naming ``flag`` otherwise."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} {item!r}: expected {expected}")
        out[key.strip()] = value.strip()
    return out


def parse_assign(items: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``["background=scenes+generalist", ...]`` -> ``{"background": ("scenes", "generalist")}``."""
    expected = "CLASS=EXPERT[+EXPERT...]"
    out = {cls: tuple(n.strip() for n in names.split("+") if n.strip())
           for cls, names in _parse_pairs(items, "--assign", expected).items()}
    if empty := [cls for cls, experts in out.items() if not experts]:
        raise ValueError(f"--assign {empty[0]}=…: expected {expected}")
    return out


def parse_decode(items: Iterable[str]) -> dict[str, str]:
    """``["generalist=regression x1.5", ...]`` -> ``{"generalist": "regression x1.5"}`` (names checked on load)."""
    return _parse_pairs(items, "--decode", "EXPERT=DECODING (`--decode list` prints them)")


def add_pipeline_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every front end that colours photos takes (main command, ``batch``), with one meaning."""
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 …")
    p.add_argument("--backend", choices=list(BACKENDS), default="torch",
                   help="run the router and experts in torch or onnxruntime (converts in memory unless the plugins "
                        "ship model.onnx, see 'export onnx')")
    p.add_argument("--router-backend", choices=["auto", *BACKENDS], default="auto",
                   help="where the router's segmenter runs; auto (default): onnxruntime on CPU when installed "
                        "(about 2x faster there), else as --backend")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and each onnxruntime session (default: the cores this process may "
                        "use less those other processes keep busy)")
    p.add_argument("--size", type=int, default=None, help="working resolution: long side in pixels")
    p.add_argument("--saturation", type=float, default=None, help="chroma multiplier (1 = as predicted)")
    p.add_argument("--router", default="embedded", help="embedded | background | generalist | lraspp | "
                   "deeplabv3 (online weights) | path to an smp checkpoint folder")
    p.add_argument("--temperature", type=float, default=None, help="router softmax temperature (>1 softer)")
    p.add_argument("--experts", action="append", default=[], metavar="DIR",
                   help="extra plugin folder (repeatable; after $ENSEMBLE_COLOR_EXPERTS, later wins)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="use only these experts")
    p.add_argument("--assign", action="append", default=[], metavar="CLASS=EXPERT[+EXPERT]",
                   help="colour a route class with these experts instead of the ones whose manifests claim it "
                        "(e.g. background=scenes+generalist); repeatable")
    p.add_argument("--decode", action="append", default=[], metavar="EXPERT=DECODING",
                   help="decode a multi-head expert so in the blend (e.g. 'generalist=regression x1.5'; default "
                        "'generalist=blend 0.75 soft', docs/tuning.md); `--decode list` prints the decodings. A "
                        "photo it colours (nearly) alone decodes as its manifest says, unless --decode-alone blend")
    p.add_argument("--decode-alone", choices=DECODE_ALONE, default=None,
                   help="how an expert colouring a photo alone decodes: as its manifest says (default, "
                        "docs/tuning_alone_share.md) or as in the blend (--decode)")
    p.add_argument("--alone-share", type=float, default=None, metavar="S",
                   help="an expert colours a photo alone when it carries at least this share of it (0-1]; "
                        "default 0.9, 1 = only when no other expert has a region")
    subject = p.add_mutually_exclusive_group()
    subject.add_argument("--context", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                         help="let subjects' experts also colour the background when the subjects fill more "
                              f"than LO of the frame (all of it from HI); default {SUBJECT_CONTEXT_RAMP[0]} "
                              f"{SUBJECT_CONTEXT_RAMP[1]} (docs/tuning.md)")
    subject.add_argument("--main-subject", action="store_const", const=SUBJECT_CONTEXT_RAMP, dest="context",
                         help=f"photos of one bird, animal or person: same as --context "
                              f"{SUBJECT_CONTEXT_RAMP[0]} {SUBJECT_CONTEXT_RAMP[1]}, the default (the web demo's "
                              f"'One main subject' box)")
    subject.add_argument("--no-context", action="store_const", const=NO_CONTEXT, dest="context",
                         help="the background always goes to its own experts, however large the subjects")


def options_from_args(args: argparse.Namespace, threads: int | None = None) -> tuple[LoadOptions, PipelineOptions]:
    """Flags of :func:`add_pipeline_arguments` -> (load-time, per-call) options; ``ValueError`` with a one-line
    message for a bad value. ``threads`` replaces ``args.threads`` (the front end resolved the default)."""
    defaults = PipelineOptions()
    per_call: dict[str, Any] = {k: v for k, v in {
        "work_size": args.size, "saturation": args.saturation, "decode_alone": args.decode_alone,
        "alone_share": args.alone_share}.items() if v is not None}
    if assigned := parse_assign(args.assign):  # on top of the default assignment (the generalist: background)
        per_call["assign"] = {**defaults.assign, **assigned}
    if decodings := parse_decode(args.decode):  # on top of the default (the generalist's decoding in the blend)
        per_call["decode"] = {**defaults.decode, **decodings}
    if args.context is NO_CONTEXT:
        per_call["context"] = None
    elif args.context is not None:
        per_call["context"] = parse_context(args.context)
    load = LoadOptions(experts_dirs=tuple(args.experts), router=args.router, device=args.device,
                       enabled=tuple(args.only) if args.only else None,
                       router_options={"temperature": args.temperature} if args.temperature is not None else {},
                       backend=args.backend, router_backend=args.router_backend,
                       threads=threads if threads is not None else args.threads)
    return load, PipelineOptions(**per_call)


def named_experts(load: LoadOptions, options: PipelineOptions) -> set[str]:
    """Experts the options name explicitly (``--assign``, ``--decode``): a front end checks them against the
    installed ones and says which are missing."""
    defaults = PipelineOptions()
    assigned = {n for cls, names in options.assign.items() if defaults.assign.get(cls) != names for n in names}
    return assigned | {n for n, d in options.decode.items() if defaults.decode.get(n) != d}
