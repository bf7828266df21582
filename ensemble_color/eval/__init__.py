"""Evaluation: colour metrics (L2ab, colourfulness, palette distance), the perceptual judge (EfficientNet-Lite0
agree@1 and Fréchet distance), and the reports of the pipeline, the router and the generalist.

Training imports evaluation (to validate and select), never the reverse.
"""
