"""backsal: backpropagation saliency in one pass per backward rule."""

__version__ = "0.1.0"
