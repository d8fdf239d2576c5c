"""Data modules: corpora, the feature cache and preference groups (docs/architecture.md)."""
from reasonaudio import moved

moved.install_under(__name__)  # old module names of this package (docs/architecture.md)
