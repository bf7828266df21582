"""Training: image caches, loops for experts / router / generalist, export to the plugin format."""
