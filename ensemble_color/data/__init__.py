"""Training and evaluation data: the data packs' photos and masks, their roots, and synthetic composites.

Below both ``eval`` and ``train`` (both read the same photos, masks and composites); it imports neither.
"""
